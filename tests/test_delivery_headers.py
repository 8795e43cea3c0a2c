"""Bulk-sender headers (RFC 2369, RFC 8058, RFC 2919), DKIM, and no header injection."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import dkim
import pytest

from newsletter import app
from newsletter.app import Context
from newsletter.message import PreparedMessage
from newsletter.models import Recipient, SubscriberState
from newsletter.personalization import TokenSet
from newsletter.store import subscribers as subscriber_rows
from tests import wire
from tests.pipelining_servers import advertise_pipelining
from tests.smtp_servers import SmtpTestServer

HOSTILE = "Eve\r\nBcc: victim@example.org\nX-Injected: yes\rCc: other@example.org"


@pytest.fixture(params=["plain", "pipelining"])
def smtp_flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Against a server without PIPELINING and one offering it."""
    if request.param == "pipelining":
        advertise_pipelining(monkeypatch)
    return str(request.param)


def header_block(data: bytes) -> list[bytes]:
    """The raw header lines (folded continuations joined), as sent."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.split(rb"\r\n(?![ \t])", head)


def add(ctx: Context, email: str, name: str, attrs: dict[str, str] | None = None) -> int:
    """A subscriber stored as is: data that bypassed every cleaning on the way in."""
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(email, name, attrs or {})], state=SubscriberState.ACTIVE, now=ctx.clock()
        )
        found = subscriber_rows.get_by_email(conn, email)
    assert found is not None
    return found.id


@pytest.mark.usefixtures("smtp_flavour")
def test_every_message_carries_the_bulk_sender_headers(make_context, clock):
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={
                "from_address": "digest@news.example.org",
                "unsubscribe_mailto": "leave@news.example.org",
                "list_id": "daily.news.example.org",
                "title": "The Daily Digest",
            },
        )
        ids = {
            email: add(ctx, email, name)
            for email, name in [("ada@example.org", "Ada"), ("bob@example.org", "")]
        }

        app.send_now(ctx)

    messages = {r.rcpt_tos[0]: r.parse() for r in server.received}
    assert set(messages) == set(ids)
    message_ids = set()
    for email, message in messages.items():
        unsubscribe = message["List-Unsubscribe"]
        found = re.fullmatch(
            r"<(https://news\.example\.org/unsubscribe/([^>]+))>,\s*"
            r"<mailto:leave@news\.example\.org\?subject=unsubscribe>",
            unsubscribe,
        )
        assert found is not None, unsubscribe
        subject, _ = ctx.signer.read(found.group(2), "unsubscribe")
        with ctx.store.atomic() as conn:
            owner = subscriber_rows.get_by_public_id(conn, subject)
        assert owner is not None and owner.id == ids[email]  # a token for this very subscriber
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Id"] == "The Daily Digest <daily.news.example.org>"
        assert re.fullmatch(r"<[^@<>\s]+@news\.example\.org>", message["Message-ID"])
        assert message["From"] == "The Daily Digest <digest@news.example.org>"
        assert message["DKIM-Signature"] is None  # not configured
        message_ids.add(message["Message-ID"])
    assert len(message_ids) == 2


@pytest.mark.usefixtures("smtp_flavour")
def test_dkim_signatures_verify_against_the_published_key(make_context):
    key = wire.dkim_key()
    with SmtpTestServer() as server:
        ctx = make_context(
            smtp={"port": server.port},
            newsletter={"from_address": "digest@news.example.org"},
            dkim=key.settings(),
        )
        add(ctx, "ada@example.org", "Ada Lovelace")
        add(ctx, "zoe@example.com", "Zoë Müller", {"city": "Zürich"})

        app.send_now(ctx)

    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append(name)
        return key.record if name == b"nltest._domainkey.news.example.org." else None

    assert len(server.received) == 2
    for received in server.received:
        assert dkim.verify(received.data, dnsfunc=dns), received.rcpt_tos
        signature = received.parse()["DKIM-Signature"]
        signed = re.search(r"h=([^;]+)", signature)
        assert signed is not None
        headers = {h.strip().lower() for h in signed.group(1).replace("\r\n", "").split(":")}
        assert {"from", "to", "subject", "message-id", "list-unsubscribe"} <= headers
        assert {"list-unsubscribe-post", "list-id"} <= headers
        # Changing the one-click header breaks the signature: it really is covered.
        tampered = received.data.replace(b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two")
        assert not dkim.verify(tampered, dnsfunc=dns)
    assert set(asked) == {b"nltest._domainkey.news.example.org."}


@pytest.mark.usefixtures("smtp_flavour")
def test_subscriber_data_cannot_inject_headers_over_smtp(make_context):
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        add(ctx, "eve@example.org", HOSTILE, {"city": "Paris\r\nBcc: more@example.org"})

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 1}
    [received] = server.received
    assert received.rcpt_tos == ["eve@example.org"]
    lines = header_block(received.data)
    names = [line.split(b":", 1)[0].lower() for line in lines]
    assert b"bcc" not in names and b"cc" not in names and b"x-injected" not in names
    # A line break inside a field is only ever a fold (CRLF then a space): no new field.
    assert all(re.fullmatch(rb"[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", line) for line in lines)
    message = received.parse()
    assert message["To"].addresses[0].addr_spec == "eve@example.org"
    assert message["Bcc"] is None and message["X-Injected"] is None


def test_prepared_message_headers_are_single_lines_whatever_the_data(make_settings):
    settings = make_settings(
        newsletter={"title": "Daily\r\nBcc: list@example.org", "from_name": "News\nBcc: x@y.org"}
    )
    tokens = TokenSet()
    message = PreparedMessage(
        digest_id=7,
        subject="Big news\r\nBcc: victim@example.org\r\n\r\nbody",
        html_body=f"<p>Hello {tokens.token('name')}</p>",
        text_body=f"Hello {tokens.token('name')}",
        tokens=tokens,
        settings=settings,
        unsubscribe_url=lambda r: f"https://news.example.org/unsubscribe/{r.subscriber_id}",
    )

    envelope = message.personalize(
        Recipient(delivery_id=3, subscriber_id=5, email="eve@example.org", name=HOSTILE),
        now=datetime(2026, 11, 26, 7, 0, tzinfo=UTC),
    )

    lines = header_block(envelope.data)
    names = {line.split(b":", 1)[0].lower() for line in lines}
    assert names == {
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"list-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"mime-version",
        b"content-type",
    }
    parsed = message_from_bytes(envelope.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "Big news Bcc: victim@example.org body"
    assert "\n" not in parsed["To"] and "\r" not in parsed["To"]
    body = parsed.get_body(("plain",))
    assert body is not None and "Bcc: victim@example.org" in body.get_content()  # body, not head
