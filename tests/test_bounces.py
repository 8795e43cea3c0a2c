"""Hard bounces: an address whose mailbox is gone stops getting digests; other refusals do not."""

from __future__ import annotations

from pathlib import Path

from newsletter import app
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers import add_subscriber
from tests.smtp_servers import RecordingHandler, SmtpTestServer

REPLIES = {
    "gone@example.org": "550 5.1.1 no such user",
    "disabled@example.org": "550 5.2.1 mailbox disabled",
    "policy@example.org": "550 5.7.1 message refused by policy",
}


def test_hard_bounces_become_bounced_and_get_nothing_more(make_context, clock, tmp_path: Path):
    handler = RecordingHandler(rcpt_reply=lambda address, attempt: REPLIES.get(address))
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port})
        for email in [*REPLIES, "ada@example.org"]:
            add_subscriber(ctx.store, email, now=clock())

        first = app.send_now(ctx)

        assert first.report is not None and (first.report.sent, first.report.failed) == (1, 3)
        with ctx.store.atomic() as conn:
            states = {e: s for e, _, s in _all(conn)}
        assert states == {
            "gone@example.org": "bounced",
            "disabled@example.org": "bounced",
            "policy@example.org": "active",  # a policy refusal says nothing about the address
            "ada@example.org": "active",
        }

        article = tmp_path / "news"
        article.mkdir()
        (article / "001_new.txt").write_text(
            "date 2026-11-26\n\nA new article arrived today. It is short.\n", encoding="utf-8"
        )
        later = make_context(smtp={"port": server.port}, sources={"articles_dir": str(article)})
        handler.attempts.clear()
        second = app.send_now(later)

    assert second.report is not None and second.report.sent == 1
    assert set(handler.attempts) == {"policy@example.org", "ada@example.org"}


def _all(conn):
    return [(row.email, row.name, row.state) for row in subscriber_rows.iter_all(conn)]
