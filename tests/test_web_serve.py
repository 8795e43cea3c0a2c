"""``newsletter serve`` as a real process: it listens, answers, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from newsletter.config import DEFAULT_WEB_SECRET
from newsletter.inbox import free_port
from tests.admin_login import PASSWORD, log_in
from tests.conftest import REPO, SEEDS, Run

STARTUP_TIMEOUT = 15.0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_answers_and_stops_cleanly(tmp_path: Path, stop: signal.Signals):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_STORE__URL=f"sqlite:///{tmp_path / 'news.db'}",
        NEWSLETTER_SOURCES__ARTICLES_DIR=str(SEEDS),
        NEWSLETTER_DIGEST__MAX_AGE_DAYS="36500",
        NEWSLETTER_WEB__SECRET="serve-test-secret-0123456789",
        NO_PROXY="127.0.0.1",
    )
    subprocess.run(
        [sys.executable, "-m", "newsletter", "admin", "add-user", "ada", "--password-stdin"],
        cwd=REPO,
        env=env,
        input=PASSWORD + "\n",
        check=True,
        capture_output=True,
        text=True,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                index = httpx.get(base + "/", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve did not start: {process.communicate()[1]}")
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as client:
            anonymous = client.get("/preview")
            login = log_in(client)
            preview = client.get("/preview")
        one_click = httpx.post(base + "/unsubscribe/bad", data={"List-Unsubscribe": "One-Click"})
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=STARTUP_TIMEOUT)

    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    assert login.status_code == 303 and login.headers["location"] == "/admin"
    assert index.status_code == 200 and preview.status_code == 200
    assert "The Daily Digest" in preview.text
    assert one_click.status_code == 400
    assert process.returncode == 0, err
    assert out.startswith(f"serving on http://127.0.0.1:{port}/")
    assert out.endswith("stopped\n") and "Traceback" not in err


def test_serve_on_a_busy_port_is_one_line(run: Run, env: Path):
    with busy_port() as busy:
        port = busy.getsockname()[1]

        code, _, err = run("serve", "--port", str(port))

    assert code == 2
    assert err == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another with --port)\n"
    )


def busy_port() -> socket.socket:
    """A bound, listening socket: serve stops with one line before the server would start."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    return busy


def test_serve_refuses_the_default_secret_with_a_public_base_url(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NEWSLETTER_WEB__SECRET")  # base_url is https://news.example.org

    code, out, err = run("serve", "--port", "0")

    assert code == 2 and out == ""
    assert err.startswith("error: [web] secret is the built-in default, so anyone could forge")
    assert "set [web] secret (or NEWSLETTER_WEB__SECRET)" in err and err.count("\n") == 1


def test_serve_warns_about_plain_http_and_a_public_host(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_WEB__BASE_URL", "http://news.example.org")
    with busy_port() as busy:
        port = busy.getsockname()[1]

        _, _, err = run("serve", "--host", "0.0.0.0", "--port", str(port))

    lines = err.splitlines()
    assert lines[0].startswith("warning: [web] base_url http://news.example.org is not https")
    assert lines[1].startswith("warning: listening on 0.0.0.0: logins and admin pages travel")
    assert lines[2].startswith("error: cannot listen on 0.0.0.0:")


def test_serve_on_loopback_runs_with_the_default_secret(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    """The local demo: links to 127.0.0.1 only work on this machine, so no secret is needed."""
    monkeypatch.delenv("NEWSLETTER_WEB__SECRET")
    monkeypatch.setenv("NEWSLETTER_WEB__BASE_URL", "http://127.0.0.1:8000")
    with busy_port() as busy:
        port = busy.getsockname()[1]

        code, _, err = run("serve", "--port", str(port))

    assert code == 2 and err.startswith("error: cannot listen on 127.0.0.1:")  # got that far


def test_serve_warns_when_the_default_secret_is_a_previous_one(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_WEB__PREVIOUS_SECRETS", json.dumps([DEFAULT_WEB_SECRET]))
    with busy_port() as busy:
        port = busy.getsockname()[1]

        _, _, err = run("serve", "--port", str(port))

    assert err.splitlines()[0].startswith(
        "warning: [web] previous_secrets holds the built-in default: anyone can forge unsubscribe"
    )


def test_the_dashboard_gets_the_next_run_of_the_configured_schedule():
    from datetime import UTC, datetime

    from newsletter.cli.serve import _next_run
    from newsletter.config import load_settings

    settings = load_settings(None, schedule={"cron": "30 6 * * 1", "timezone": "Europe/Berlin"})
    friday = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    found = _next_run(settings)(friday)

    assert found is not None and found.astimezone(UTC) == datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
