"""A digest nobody received (issue #9, item 8): ``failed``, a non-zero exit with one line, not in
the archive, its articles offered again; and ``resend DIGEST --failed``, once per delivery.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select

from newsletter import app
from newsletter.app.resend import resend_failed
from newsletter.app.slots import claim_slot, send_slot
from newsletter.config import load_settings
from newsletter.errors import SendInProgress
from newsletter.models import Article, RenderedDigest, SubscriberState
from newsletter.store import Store, outbox
from newsletter.store import digests as digest_rows
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import articles, deliveries, digest_articles
from newsletter.subscribers import add_subscriber
from tests.conftest import Run
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

TOO_BIG = "552 5.3.4 message too big for this system"
READERS = [f"reader{i}@example.org" for i in range(5)]


@dataclass
class Refusing:
    """A ``data_reply`` that refuses every DATA (or only chosen recipients) until switched off."""

    only: set[str] = field(default_factory=set)
    on: bool = True

    def __call__(self, envelope: Envelope, attempt: int) -> str | None:
        if self.on and (not self.only or envelope.rcpt_tos[0] in self.only):
            return TOO_BIG
        return None


def _subscribe(run: Run) -> None:
    for email in READERS:
        assert run("subscribers", "add", email)[0] == 0


def _articles_of(store: Store, digest_id: int) -> set[str]:
    with store.atomic() as conn:
        return set(
            conn.execute(
                select(articles.c.key)
                .join(digest_articles, digest_articles.c.article_id == articles.c.id)
                .where(digest_articles.c.digest_id == digest_id)
            ).scalars()
        )


def test_a_digest_nobody_received_fails_exits_3_and_its_articles_go_out_next_time(
    run: Run, env: Path, smtp_server: SmtpTestServer
):
    _subscribe(run)
    smtp_server.handler.data_reply = refusing = Refusing()
    store = Store.open(load_settings().store.url)

    code, out, err = run("send-now")

    assert code == 3
    assert "0 sent, 5 failed: nobody received it" in out
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert err.startswith(
        f"error: digest 1 reached nobody: all 5 deliveries failed (most often: {TOO_BIG}); its "
        "articles go out with the next digest. Fix the cause, then `newsletter resend 1 --failed`"
    )
    code, out, _ = run("status")
    assert code == 0 and "#1 " in out and "[failed]" in out and f"5 failed: {TOO_BIG}" in out
    with store.atomic() as conn:
        assert digest_rows.list_digests(conn, sent_only=True) == []  # not in the archive
        assert digest_rows.unfinished_digest_ids(conn) == []  # nothing to resume either
    offered = _articles_of(store, 1)
    assert offered

    refusing.on = False
    code, out, _ = run("send-now")

    assert code == 0 and "digest 2 " in out and "5 sent, 0 failed" in out
    assert _articles_of(store, 2) == offered and _articles_of(store, 1) == set()
    assert Counter(smtp_server.handler.recipients()) == Counter(READERS)
    store.close()


def test_resend_failed_queues_each_failed_delivery_once_and_delivers_it(
    run: Run, env: Path, smtp_server: SmtpTestServer
):
    _subscribe(run)
    smtp_server.handler.data_reply = refusing = Refusing()
    assert run("send-now")[0] == 3
    refusing.on = False

    code, out, _ = run("resend", "1", "--failed")

    assert code == 0
    assert "digest 1: 5 failed deliveries queued again; 5 sent, 0 failed" in out
    assert Counter(smtp_server.handler.recipients()) == Counter(READERS)
    code, out, _ = run("resend", "1", "--failed")
    assert code == 0 and "digest 1: no failed deliveries to send again." in out
    code, out, _ = run("status")
    assert "[sent]" in out and "5 sent" in out
    # The resend carried the digest's articles after all: they do not go out a second time.
    code, out, _ = run("send-now")
    assert code == 0 and "no new articles since the last digest" in out
    assert Counter(smtp_server.handler.recipients()) == Counter(READERS)


def test_resend_sends_only_the_deliveries_that_failed(
    run: Run, env: Path, smtp_server: SmtpTestServer
):
    _subscribe(run)
    smtp_server.handler.data_reply = refusing = Refusing(only={"reader3@example.org"})
    code, out, _ = run("send-now")
    assert code == 0 and "4 sent, 1 failed" in out
    refusing.on = False

    code, out, _ = run("resend", "1", "--failed")

    assert code == 0 and "1 failed deliveries queued again; 1 sent, 0 failed" in out
    assert Counter(smtp_server.handler.recipients()) == Counter(READERS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resend", "1"], "error: say which deliveries to send again: --failed"),
        (["resend", "9", "--failed"], "error: there is no digest 9 (newsletter status lists them)"),
    ],
)
def test_resend_usage_errors_are_one_line(run: Run, env: Path, args: list[str], message: str):
    code, _, err = run(*args)
    assert code == 2 and err.strip() == message


@dataclass
class SlowHandler(RecordingHandler):
    """Refuses while ``refusing``; once accepting, slowly, and says when the first arrived."""

    refusing: bool = True
    first: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.refusing:
            return TOO_BIG
        await asyncio.sleep(0.05)
        reply = await super().handle_DATA(server, session, envelope)
        self.first.set()
        return reply


def _add(ctx: app.Context, emails: list[str]) -> None:
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(e, "", {}) for e in emails], state=SubscriberState.ACTIVE, now=ctx.clock()
        )


def test_concurrent_resends_queue_and_send_each_delivery_once(make_context):
    handler = SlowHandler()
    readers = [f"reader{i:02d}@example.org" for i in range(12)]
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 1})
        _add(ctx, readers)
        summary = app.send_now(ctx)
        assert summary.failed and summary.report is not None
        handler.refusing = False
        results: list[object] = []
        first = threading.Thread(target=lambda: results.append(resend_failed(ctx, 1)))
        first.start()
        try:
            assert handler.first.wait(30)
            with pytest.raises(SendInProgress):
                resend_failed(ctx, 1)  # while the first one sends
        finally:
            first.join(60)
        after = resend_failed(ctx, 1)

    assert Counter(server.handler.recipients()) == Counter(readers)
    assert after.requeued == 0 and after.report is None


def test_requeueing_moves_each_failed_row_once_however_many_run_at_once(make_context):
    ctx = make_context()
    _add(ctx, READERS)
    with ctx.store.atomic() as conn:
        article = Article(key="a1", title="A", published=ctx.clock(), summary="A.")
        digest_rows.remember_articles(conn, [article], now=ctx.clock())
        rendered = RenderedDigest(
            subject="S", preheader="", html="x", text="x", article_keys=("a1",)
        )
        digest_id = digest_rows.create_digest(
            conn, rendered, token_nonce="NLabc", slot=None, now=ctx.clock()
        )
        outbox.create_outbox(conn, digest_id, now=ctx.clock())
        conn.execute(deliveries.update().values(state="failed"))
    barrier = threading.Barrier(4)
    moved: list[int] = []

    def requeue() -> None:
        barrier.wait(10)
        with ctx.store.atomic() as conn:
            moved.append(outbox.requeue_failed(conn, digest_id, now=ctx.clock()))

    threads = [threading.Thread(target=requeue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(moved) == [0, 0, 0, len(READERS)]
    with ctx.store.atomic() as conn:
        assert outbox.counts(conn, digest_id) == {"pending": len(READERS)}


def test_a_scheduled_slot_whose_digest_reached_nobody_says_so(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    for email in READERS:
        add_subscriber(ctx.store, email, now=clock())
    smtp_server.handler.data_reply = Refusing()
    slot = "2026-11-26T07:00:00+00:00"
    assert claim_slot(ctx, slot, "test:1") is None

    result = send_slot(ctx, slot, "test:1")

    assert result.outcome.startswith("digest 1 reached nobody (")
    assert "0 sent, 5 failed; its articles go out with the next digest" in result.outcome
    assert "sent digest" not in result.outcome
