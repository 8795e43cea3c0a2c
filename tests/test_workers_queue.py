"""Queued digests in one process: ``[schedule] deliver = "workers"``, ``run_worker`` with
``once``, hard bounces, and the ``send-now --queue`` command line. The runs with real
processes are in ``test_workers_processes.py``."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from newsletter import app
from newsletter.app.worker import run_worker
from newsletter.schedule.runner import SlotRunner
from newsletter.schedule.timing import Schedule
from newsletter.store.schema import deliveries, digests, subscribers
from newsletter.subscribers import add_subscriber
from tests.conftest import FrozenClock, Run
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

HARD_BOUNCE = "550 5.1.1 <gone@example.org>: user unknown"


def _subscribe(ctx: app.Context, clock: FrozenClock, emails: list[str]) -> None:
    for email in emails:
        add_subscriber(ctx.store, email, "", now=clock())


def _states(ctx: app.Context) -> tuple[str, Counter[str]]:
    with ctx.store.atomic() as conn:
        digest = conn.execute(select(digests.c.state)).scalar_one()
        rows = Counter(conn.execute(select(deliveries.c.state)).scalars())
    return str(digest), rows


def test_run_with_deliver_workers_queues_the_slot_and_a_worker_delivers_it_once(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock
):
    ctx = make_context(smtp={"port": smtp_server.port}, schedule={"deliver": "workers"})
    emails = ["ada@example.org", "bob@example.org", "cy@example.org"]
    _subscribe(ctx, clock, emails)
    clock.advance(seconds=2)
    schedule = Schedule("0 7 * * *", ZoneInfo("UTC"), timedelta(minutes=360))
    probes = smtp_server.handler.sessions

    result = SlotRunner(ctx, schedule, owner="host-a:1").run_due()

    assert result is not None and result.done
    assert result.outcome.startswith("queued digest 1 (")
    assert smtp_server.handler.sessions == probes  # nothing sent, not even a connection
    assert _states(ctx) == ("sending", Counter(pending=3))

    summary = run_worker(ctx, stop=threading.Event(), once=True)

    assert Counter(smtp_server.handler.recipients()) == Counter(emails)
    assert _states(ctx) == ("sent", Counter(sent=3))
    assert (summary.digests, summary.sent, summary.failed) == ({1}, 3, 0)
    again = run_worker(ctx, stop=threading.Event(), once=True)  # nothing left: returns
    assert (again.digests, again.sent) == (set(), 0)
    assert len(smtp_server.received) == 3


def test_a_worker_marks_a_hard_bounce_and_finishes_the_digest(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock
):
    smtp_server.handler.rcpt_reply = lambda address, _: (
        HARD_BOUNCE if address == "gone@example.org" else None
    )
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, ["ada@example.org", "gone@example.org"])
    queued = app.send_now(ctx, queue=True)
    assert queued.digest_id == 1 and queued.queued == 2

    summary = run_worker(ctx, stop=threading.Event(), once=True)

    assert (summary.sent, summary.failed) == (1, 1)
    assert _states(ctx) == ("sent", Counter(sent=1, failed=1))
    with ctx.store.atomic() as conn:
        states = dict(conn.execute(select(subscribers.c.email, subscribers.c.state)).all())
    assert states == {"ada@example.org": "active", "gone@example.org": "bounced"}


def test_send_now_queue_refuses_dry_run_and_test_copies(run: Run, env: Path):
    for extra in (["--dry-run"], ["--to", "me@example.org"]):
        code, _, err = run("send-now", "--queue", *extra)
        assert code != 0
        assert err.strip().splitlines() == [
            "error: --queue makes the digest for the workers: leave out --dry-run and --to"
        ]
