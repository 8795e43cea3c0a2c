"""The whole pipeline: seeds/ -> store -> render -> SMTP server on loopback, parsed back."""

from __future__ import annotations

import os
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter import app
from newsletter.subscribers import add_subscriber
from tests import wire
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py


def test_digest_reaches_every_subscriber_personalized(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    add_subscriber(ctx.store, "Ada@Example.org", "Ada Lovelace", now=clock())
    add_subscriber(ctx.store, "zoe@example.com", "Zoë <b>Müller</b>", now=clock())

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 2
    by_rcpt = {r.rcpt_tos[0]: r.parse() for r in smtp_server.received}
    assert set(by_rcpt) == {"ada@example.org", "zoe@example.com"}
    zoe = by_rcpt["zoe@example.com"]
    assert zoe.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in zoe.iter_parts()] == ["text/plain", "text/html"]
    assert zoe["To"].addresses[0].display_name == "Zoë <b>Müller</b>"
    html = wire.body(zoe, "html")
    assert "Zoë &lt;b&gt;Müller&lt;/b&gt;" in html
    assert "Hello Zoë <b>Müller</b>" in wire.body(zoe, "plain")
    assert 'style="' in html  # CSS was inlined
    unsubscribe = re.search(
        r"<(https://news\.example\.org/unsubscribe/[^>]+)>", zoe["List-Unsubscribe"]
    )
    assert unsubscribe is not None and unsubscribe.group(1) in html
    assert zoe["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert zoe["Message-ID"] != by_rcpt["ada@example.org"]["Message-ID"]
    assert zoe["Message-ID"].endswith("@example.org>")


def test_second_send_has_nothing_new(make_context, smtp_server: SmtpTestServer, clock):
    ctx = make_context(smtp={"port": smtp_server.port})
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    first = app.send_now(ctx)
    assert first.report is not None and first.report.sent == 1

    second = app.send_now(ctx)

    assert second.report is None
    assert second.skipped_reason == "no new articles since the last digest"
    assert len(smtp_server.received) == 1


GOLDEN = Path(__file__).parent / "golden"
CAPTIONS_AND_BOILERPLATE = [
    "Commuters board a new low-floor tram",  # photo caption with credit
    "CITYWIRE/Marta Kowal",
    "(not pictured)",
    "Subscribe to our morning briefing",  # page boilerplate on the date line
    "November 24 - ",  # dateline
]


def _normalized(message: EmailMessage) -> str:
    """The received plain-text part with what changes per run replaced by fixed markers."""
    text = wire.body(message, "plain").replace("\r\n", "\n")
    text = re.sub(r"/archive/d/[A-Za-z0-9_-]{16}", "/archive/d/<key>", text)
    return re.sub(r"/unsubscribe/[A-Za-z0-9_.-]+", "/unsubscribe/<token>", text)


def test_seed_digest_matches_the_golden_text_part(make_context, smtp_server: SmtpTestServer, clock):
    """The whole text part of the seeds digest; regenerate on purpose with REGENERATE_GOLDEN=1."""
    ctx = make_context(smtp={"port": smtp_server.port})
    add_subscriber(ctx.store, "ada@example.org", "Ada Lovelace", now=clock())
    app.send_now(ctx)
    [message] = smtp_server.messages()
    golden = GOLDEN / "seeds_digest.txt"
    actual = _normalized(message)
    if os.environ.get("REGENERATE_GOLDEN") == "1":
        golden.write_text(actual, encoding="utf-8")
    assert actual == golden.read_text(encoding="utf-8")


def test_delivered_digest_has_no_captions_or_page_boilerplate(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    app.send_now(ctx)
    [message] = smtp_server.messages()
    html, text = wire.body(message, "html"), wire.body(message, "plain")
    for fragment in CAPTIONS_AND_BOILERPLATE:
        assert fragment not in html and fragment not in text, fragment
    assert "Brenmoor's first new tram line in three decades opened" in text
    assert "CITYWIRE" in html  # the agency credit is kept as the source
    assert message["From"] == "The Daily Digest <digest@example.org>"
    assert message["Subject"] == "The Daily Digest: 26 November 2026"
    assert message["Date"].datetime == clock()
    assert message["List-Id"] == "The Daily Digest <digest.example.org>"
    assert "@media" in html and "!important" in html  # responsive rules kept in a <style> block
    assert 'style="' in html and "<table" in html


def test_header_values_never_carry_injected_lines(make_context, smtp_server: SmtpTestServer, clock):
    ctx = make_context(
        smtp={"port": smtp_server.port},
        newsletter={"from_name": "Digest\r\nBcc: a@evil.example", "title": "T\nX-Evil: 1"},
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada\r\nBcc: b@evil.example", now=clock())
    app.send_now(ctx)
    [received] = smtp_server.received
    message = received.parse()
    assert received.rcpt_tos == ["ada@example.org"]
    assert message["Bcc"] is None and message["X-Evil"] is None
    head = received.data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert line[:1] in (b" ", b"\t") or b":" in line, line
