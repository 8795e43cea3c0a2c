"""The whole pipeline: seeds/ -> store -> render -> SMTP server on loopback, parsed back."""

from __future__ import annotations

import re
from email.message import EmailMessage

from newsletter import app
from newsletter.subscribers import add_subscriber
from tests.smtp_servers import SmtpTestServer


def _body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


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
    html = _body(zoe, "html")
    assert "Zoë &lt;b&gt;Müller&lt;/b&gt;" in html
    assert "Hello Zoë <b>Müller</b>" in _body(zoe, "plain")
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
