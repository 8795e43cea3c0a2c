"""DKIM and test copies (issue #9, item 9): relaxed/relaxed signatures, the forgeable fields
over-signed, test copies signed, and a test copy to an address not on the list without a dead
unsubscribe link.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import dkim
import pytest

from newsletter import app
from newsletter.message import TEST_COPY_UNSUBSCRIBE_HREF, TEST_COPY_UNSUBSCRIBE_TEXT
from newsletter.subscribers import add_subscriber
from tests import wire
from tests.conftest import Run
from tests.smtp_servers import Received, SmtpTestServer


def _signed_message(make_context, clock, **newsletter: str) -> Received:
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={"from_address": "digest@news.example.org", **newsletter},
            dkim=wire.dkim_key().settings(),
        )
        add_subscriber(ctx.store, "ada@example.org", "Ada Lovelace", now=clock())
        app.send_now(ctx)
    [received] = server.received
    return received


def _tags(data: bytes) -> dict[str, str]:
    signature = str(wire.parse(data)["DKIM-Signature"])
    return {
        key.strip(): re.sub(r"\s+", "", value)
        for key, value in (tag.split("=", 1) for tag in signature.split(";") if "=" in tag)
    }


def _verifies(data: bytes) -> bool:
    return bool(dkim.verify(data, dnsfunc=wire.dkim_dns))


def test_signatures_are_relaxed_and_survive_whitespace_changes_in_transit(make_context, clock):
    data = _signed_message(make_context, clock).data
    assert _tags(data)["c"] == "relaxed/relaxed"
    head, _, body = data.partition(b"\r\n\r\n")
    # What relays do: trailing spaces added, runs of spaces widened, header names recased.
    body = re.sub(rb"(\S) (\S)", rb"\1  \2", body).replace(b"\r\n", b"  \r\n")
    head = head.replace(b"\r\nSubject:", b"\r\nSUBJECT:").replace(b"\r\nTo: ", b"\r\nTo:   ")

    assert _verifies(head + b"\r\n\r\n" + body)
    assert not _verifies(head + b"\r\n\r\n" + body.replace(b"Unsubscribe", b"Unsubscr1be"))


def test_the_forgeable_fields_are_over_signed(make_context, clock):
    data = _signed_message(make_context, clock).data
    signed = Counter(_tags(data)["h"].lower().split(":"))
    for name in ("from", "subject", "reply-to", "list-unsubscribe", "list-unsubscribe-post"):
        assert signed[name] == 2, name
    assert _verifies(data)
    # A field added in transit, even a second copy of one that is there, breaks the signature.
    for added in [
        b"From: Mallory <mallory@example.net>\r\n",
        b"Subject: Urgent: confirm your password\r\n",
        b"Reply-To: mallory@example.net\r\n",
        b"List-Unsubscribe: <https://evil.example.net/x>\r\n",
    ]:
        head, _, body = data.partition(b"\r\n\r\n")
        assert not _verifies(head + b"\r\n" + added + b"\r\n" + body), added


def test_a_configured_reply_to_is_signed(make_context, clock):
    data = _signed_message(make_context, clock, reply_to="editor@news.example.org").data
    assert wire.parse(data)["Reply-To"] == "editor@news.example.org"
    assert _verifies(data)
    assert not _verifies(data.replace(b"Reply-To: editor@", b"Reply-To: mallory@"))


@pytest.fixture
def signing_env(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = wire.dkim_key()
    monkeypatch.setenv("NEWSLETTER_DKIM__SELECTOR", key.selector)
    monkeypatch.setenv("NEWSLETTER_DKIM__PRIVATE_KEY_FILE", str(key.private_key_file))
    return env


def test_a_test_copy_to_an_address_not_on_the_list_is_signed_and_has_no_unsubscribe_link(
    run: Run, signing_env: Path, smtp_server: SmtpTestServer
):
    code, out, _ = run("send-now", "--to", "editor@example.org")

    assert code == 0, out
    [received] = smtp_server.received
    message = received.parse()
    assert message["DKIM-Signature"] is not None and _verifies(received.data)
    assert message["List-Unsubscribe"] is None and message["List-Unsubscribe-Post"] is None
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    assert TEST_COPY_UNSUBSCRIBE_TEXT in text.get_content()
    assert f'href="{TEST_COPY_UNSUBSCRIBE_HREF}"' in page.get_content()
    assert "/unsubscribe/" not in text.get_content() + page.get_content()


def test_a_test_copy_to_a_subscriber_carries_their_working_unsubscribe_link(
    run: Run, signing_env: Path, smtp_server: SmtpTestServer
):
    assert run("subscribers", "add", "ada@example.org", "--name", "Ada")[0] == 0

    code, _, _ = run("send-now", "--to", "ada@example.org")

    assert code == 0
    [received] = smtp_server.received
    message = received.parse()
    found = re.fullmatch(
        r"<(https://news\.example\.org/unsubscribe/[^>]+)>", message["List-Unsubscribe"]
    )
    assert found is not None and message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",))
    assert text is not None and found.group(1) in text.get_content()
    assert _verifies(received.data)
