"""``newsletter serve`` as a real process: it listens, answers, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from newsletter.inbox import free_port
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
        preview = httpx.get(base + "/preview", timeout=30)
        one_click = httpx.post(base + "/unsubscribe/bad", data={"List-Unsubscribe": "One-Click"})
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=STARTUP_TIMEOUT)

    assert index.status_code == 200 and preview.status_code == 200
    assert "The Daily Digest" in preview.text
    assert one_click.status_code == 400
    assert process.returncode == 0, err
    assert out.startswith(f"serving on http://127.0.0.1:{port}/")
    assert out.endswith("stopped\n") and "Traceback" not in err


def test_serve_on_a_busy_port_is_one_line(run: Run, env: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        code, _, err = run("serve", "--port", str(port))

    assert code == 2
    assert err == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(choose another with --port)\n"
    )


def test_serve_warns_about_the_default_secret_and_a_public_host(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("NEWSLETTER_WEB__SECRET")
    with socket.socket() as busy:  # stop before the server would start
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        _, _, err = run("serve", "--host", "0.0.0.0", "--port", str(port))

    lines = err.splitlines()
    assert lines[0].startswith("warning: [web] secret is the built-in default")
    assert lines[1].startswith("warning: listening on 0.0.0.0: the preview of unsent digests")
    assert lines[2].startswith("error: cannot listen on 0.0.0.0:")
