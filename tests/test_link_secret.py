"""Real links are never signed with the published default secret.

Sending a digest or a confirmation email whose links point at a public ``base_url`` with the
built-in secret is refused (one line, exit 2, nothing sent or changed); a loopback
``base_url`` (the demo, local tests) is fine. A public ``base_url`` without https warns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run
from tests.smtp_servers import SmtpTestServer

REFUSED = "error: [web] secret is the built-in default, so anyone could forge the unsubscribe"


@pytest.fixture
def default_secret(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("NEWSLETTER_WEB__SECRET")  # base_url stays https://news.example.org
    return env


def test_send_now_refuses_before_anything_is_sent(
    run: Run, default_secret: Path, smtp_server: SmtpTestServer
):
    run("subscribers", "add", "ada@example.org")

    code, out, err = run("send-now")

    assert code == 2 and out == ""
    assert err.startswith(REFUSED) and err.count("\n") == 1
    assert "NEWSLETTER_WEB__SECRET" in err
    assert smtp_server.received == []
    assert run("status")[1].startswith("no digests yet.")  # no outbox was made


def test_a_test_copy_is_refused_too(run: Run, default_secret: Path, smtp_server: SmtpTestServer):
    run("subscribers", "add", "ada@example.org")  # listed: the copy would carry her real link

    code, _, err = run("send-now", "--to", "ada@example.org")

    assert code == 2 and err.startswith(REFUSED)
    assert smtp_server.received == []


def test_a_confirmation_email_is_refused_too_and_nothing_is_added(
    run: Run, default_secret: Path, smtp_server: SmtpTestServer
):
    code, _, err = run("subscribers", "add", "ada@example.org", "--double-opt-in")

    assert code == 2 and err.startswith(REFUSED)
    assert smtp_server.received == []
    assert run("subscribers", "list") == (0, "", "0 subscribers\n")


def test_a_loopback_base_url_sends_with_the_default_secret(
    run: Run, default_secret: Path, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_WEB__BASE_URL", "http://127.0.0.1:8000")
    run("subscribers", "add", "ada@example.org")

    code, _, err = run("send-now")

    assert code == 0, err
    [message] = smtp_server.messages()
    assert "<http://127.0.0.1:8000/unsubscribe/" in message["List-Unsubscribe"]


def test_a_public_plain_http_base_url_warns_and_sends(
    run: Run, env: Path, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NEWSLETTER_WEB__BASE_URL", "http://news.example.org")
    run("subscribers", "add", "ada@example.org")

    code, _, err = run("send-now")

    assert code == 0
    assert "[web] base_url http://news.example.org is not https" in err
    assert len(smtp_server.received) == 1
