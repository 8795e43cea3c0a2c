"""``newsletter worker`` as real processes on a real PostgreSQL server, into a capture server.

Several workers (and a ``send-now``) share one queued digest: every recipient gets it once,
except the messages a killed or stalled worker had in flight (at most ``2 * connections *
claim_batch`` of its rows, README "Scaling out"). Every wait polls with a deadline; every
process still running at the end of a test is killed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select, text, update

from newsletter import app
from newsletter.app import Context, subscriptions
from newsletter.app.send import settle_digest
from newsletter.config import load_settings
from newsletter.delivery.report import SendReport
from newsletter.models import DeliveryState, SubscriberState
from newsletter.store import outbox
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import deliveries, digests, subscribers
from tests.conftest import REPO, write_config
from tests.postgres import PostgresCluster
from tests.smtp_servers import RecordingHandler, SmtpTestServer

DEADLINE = 90.0
CLAIM_BATCH = 16


@dataclass
class PacedHandler(RecordingHandler):
    """Accepts everything, a little slowly, so signals land in the middle of a send."""

    delay: float = 0.0

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class GatedHandler(RecordingHandler):
    """Holds every message until ``gate`` is set; ``held`` says one is waiting."""

    gate: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.held.set()
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, DEADLINE)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def pg_url(postgres: PostgresCluster, postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the latest revision."""
    name = postgres.create_database(template=postgres_template)
    yield postgres.url(name)
    postgres.drop_database(name)


@dataclass
class Fleet:
    """A config on a shared database, its readers, and the processes started on it."""

    config: Path
    ctx: Context
    emails: list[str]
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # pid -> its log file

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``newsletter --config ... ARGS`` in a child process, its output in a log file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env["PYTHONPATH"] = str(REPO)
        log_path = self.folder / f"process-{len(self.processes)}.log"
        with log_path.open("wb") as log_file:
            child = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "--config", str(self.config), *args],
                cwd=self.folder,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(child)
        self.logs[child.pid] = log_path
        return child

    def log(self, child: subprocess.Popen[bytes]) -> str:
        return self.logs[child.pid].read_text(encoding="utf-8")

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.logs_text()}"
            time.sleep(0.02)  # polling the server's count or the database, not timing the test

    def finish(self, child: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
        child.send_signal(signum)
        return child.wait(timeout=DEADLINE)

    def logs_text(self) -> str:
        return "\n".join(f"--- {pid}\n{path.read_text()}" for pid, path in self.logs.items())

    def queue(self) -> int:
        """Queue the digest of the seeds (``send-now --queue`` in this process)."""
        summary = app.send_now(self.ctx, queue=True)
        assert summary.digest_id is not None and summary.queued == len(self.emails)
        return summary.digest_id

    def digest_state(self) -> str:
        with self.ctx.store.atomic() as conn:
            return str(conn.execute(select(digests.c.state)).scalar_one())

    def senders(self) -> set[str]:
        """The pids of the processes that sent rows so far."""
        with self.ctx.store.atomic() as conn:
            owners = conn.execute(
                select(deliveries.c.lease_owner)
                .where(deliveries.c.state == "sent", deliveries.c.lease_owner.is_not(None))
                .distinct()
            ).scalars()
            return {owner.split(":")[1] for owner in owners}

    def rows(self) -> dict[str, tuple[str, str | None]]:
        """Per address: its delivery's state and lease owner."""
        with self.ctx.store.atomic() as conn:
            found = conn.execute(
                select(subscribers.c.email, deliveries.c.state, deliveries.c.lease_owner).join(
                    subscribers, subscribers.c.id == deliveries.c.subscriber_id
                )
            ).all()
        return {email: (state, owner) for email, state, owner in found}


@contextmanager
def fleet(
    folder: Path, store_url: str, port: int, count: int, **sections: dict[str, Any]
) -> Iterator[Fleet]:
    """``count`` active readers on the database at ``store_url``, a config pointing at the
    SMTP server on ``port``; every process started is killed at the end."""
    smtp = {"port": port, "claim_batch": CLAIM_BATCH, "retry_base_seconds": 0.01}
    config = write_config(
        folder / "newsletter.toml",
        store={"url": store_url},
        smtp={**smtp, **sections.pop("smtp", {})},
        logging={"level": "INFO"},
        **sections,
    )
    ctx = Context.open(load_settings(config))
    emails = [f"reader{i:05d}@example.org" for i in range(count)]
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn, [(e, "", {}) for e in emails], state=SubscriberState.ACTIVE, now=ctx.clock()
        )
    team = Fleet(config, ctx, emails, folder)
    try:
        yield team
    finally:
        for child in team.processes:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        ctx.close()


def owners_pids(rows: dict[str, tuple[str, str | None]], state: str) -> Counter[str]:
    """How many rows in ``state`` each process (``host:pid:tag`` -> pid) holds or sent."""
    return Counter(owner.split(":")[1] for s, owner in rows.values() if s == state and owner)


def in_flight_taken_over(text: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) messages were in flight when their", text))


def test_two_workers_one_killed_mid_send_deliver_everyone_once_but_its_in_flight(
    tmp_path: Path, pg_url: str
):
    handler = PacedHandler(delay=0.002)
    with (
        SmtpTestServer(handler) as server,
        fleet(tmp_path, pg_url, server.port, 2000, smtp={"connections": 4}) as team,
    ):
        team.queue()
        doomed, survivor = team.start("worker"), team.start("worker")
        # Both at work (each has claimed rows), and a good part of the list out.
        team.wait_for(
            lambda: len(handler.received) >= len(team.emails) * 0.3 and len(team.senders()) == 2,
            "both workers to be delivering",
        )

        doomed.kill()
        doomed.wait(timeout=10)
        team.wait_for(lambda: team.digest_state() == "sent", "the survivor to finish the digest")
        code = team.finish(survivor)
        survivor_log = team.log(survivor)
        rows = team.rows()

    assert code == 0, survivor_log
    received = Counter(handler.recipients())
    assert set(received) == set(team.emails)  # nobody missed
    twice = {email for email, n in received.items() if n > 1}
    assert max(received.values()) <= 2
    # Only the killed worker's rows in flight went out twice; the survivor took them over.
    taken_over = in_flight_taken_over(survivor_log)
    assert len(twice) <= taken_over <= 2 * 2 * CLAIM_BATCH  # its 2 connections' claims
    assert {state for state, _ in rows.values()} == {"sent"}
    sent_by = owners_pids(rows, "sent")
    assert set(sent_by) == {str(doomed.pid), str(survivor.pid)}
    assert "worker stopped: 1 digest" in survivor_log


def test_send_now_queue_returns_at_once_and_worker_once_delivers_it(tmp_path: Path, pg_url: str):
    handler = RecordingHandler()
    with SmtpTestServer(handler) as server, fleet(tmp_path, pg_url, server.port, 40) as team:
        probes = handler.sessions  # the test server's own start-up check
        queued = team.start("send-now", "--queue")
        assert queued.wait(timeout=DEADLINE) == 0, team.log(queued)
        queued_log = team.log(queued)
        assert handler.sessions == probes  # it did not even connect
        assert team.digest_state() == "sending"
        assert {state for state, _ in team.rows().values()} == {"pending"}

        once = team.start("worker", "--once")
        code = once.wait(timeout=DEADLINE)
        once_log = team.log(once)
        idle = team.start("worker", "--once")  # nothing pending: it returns at once
        idle_code = idle.wait(timeout=DEADLINE)

    assert "queued for 40 subscribers" in queued_log
    assert "no `newsletter worker` is running on this database yet" in queued_log
    assert code == 0, once_log
    assert Counter(handler.recipients()) == Counter(team.emails)
    assert team.digest_state() == "sent"
    assert "digest 1: 40 sent, 0 failed, 0 to retry" in once_log
    assert "worker stopped: 1 digest, 40 sent, 0 failed" in once_log
    assert idle_code == 0 and "worker stopped: 0 digests, 0 sent" in team.log(idle)


def test_sigterm_stops_a_worker_after_the_messages_in_flight_and_exits_0(
    tmp_path: Path, pg_url: str
):
    handler = PacedHandler(delay=0.003)
    with SmtpTestServer(handler) as server, fleet(tmp_path, pg_url, server.port, 300) as team:
        team.queue()
        worker = team.start("worker")
        team.wait_for(lambda: len(handler.received) >= 60, "the worker to be delivering")

        code = team.finish(worker, signal.SIGTERM)
        rows = team.rows()
        stopped_log = team.log(worker)
        arrived = set(handler.recipients())

        rest = team.start("worker", "--once")
        rest_code = rest.wait(timeout=DEADLINE)

    assert code == 0, stopped_log
    assert "SIGTERM: stopping after the messages in flight" in stopped_log
    assert "worker stopped: 1 digest" in stopped_log
    states = Counter(state for state, _ in rows.values())
    assert "sending" not in states  # finished what was on the wire, gave the rest back
    assert {e for e, (state, _) in rows.items() if state == "sent"} == arrived
    assert 0 < states["pending"] < len(team.emails)
    assert rest_code == 0
    assert Counter(handler.recipients()) == Counter(team.emails)  # nobody twice, nobody missed


def test_a_stalled_workers_rows_are_taken_over_once_its_lease_lapses(
    tmp_path: Path, pg_url: str, postgres: PostgresCluster
):
    handler = PacedHandler(delay=0.003)
    with (
        SmtpTestServer(handler) as server,
        fleet(
            tmp_path,
            pg_url,
            server.port,
            300,
            smtp={"connections": 2},
            workers={"lease_seconds": 2},
        ) as team,
    ):
        team.queue()
        stalled = team.start("worker")
        team.wait_for(lambda: len(handler.received) >= 60, "the first worker to deliver")
        stalled.send_signal(signal.SIGSTOP)
        # Stopped in the middle of a transaction, its sessions keep their row locks until the
        # server ends them, as it does for a host that is gone (README, "Scaling out"). Its
        # idle_in_transaction_session_timeout cannot always: ending a session, it writes to a
        # client that may have stopped reading. Here they end at once.
        postgres.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = 'newsletter pid {stalled.pid}'",
            database=pg_url.rsplit("/", 1)[1],
        )
        try:
            held = {e for e, (state, _) in team.rows().items() if state == "sending"}
            helper = team.start("worker")
            team.wait_for(lambda: team.digest_state() == "sent", "the second worker to finish")
            code = team.finish(helper)
            helper_log = team.log(helper)
            rows = team.rows()
        finally:
            stalled.send_signal(signal.SIGCONT)
        # Woken up, the first worker finds its leases gone and sends nothing more of them.
        team.finish(stalled)

    assert code == 0, helper_log
    assert held, "the first worker held no rows when it stopped"
    assert len(held) <= 2 * 2 * CLAIM_BATCH
    assert in_flight_taken_over(helper_log) >= len(held)
    # The second worker sent the held rows itself, after their lease lapsed.
    assert all(rows[e][1] is not None and str(helper.pid) in rows[e][1] for e in held)
    received = Counter(handler.recipients())
    assert set(received) == set(team.emails)
    # Only the rows the first worker held could arrive twice: those it had sent and not
    # recorded yet when it stopped.
    assert {email for email, n in received.items() if n > 1} <= held
    assert max(received.values()) <= 2


def test_rows_a_stuck_session_locks_do_not_hold_up_the_takeover_of_the_others(
    tmp_path: Path, pg_url: str
):
    with fleet(tmp_path, pg_url, 1, 4) as team:  # nothing is sent: no server needed
        digest_id = team.queue()
        store, now = team.ctx.store, team.ctx.clock()
        with store.atomic() as conn:  # a sender that stalled left every row in sending
            conn.execute(
                update(deliveries).values(
                    state="sending",
                    lease_owner="elsewhere:1:x",
                    lease_expires_at=now - timedelta(minutes=5),
                )
            )
            first = min(conn.execute(select(deliveries.c.id)).scalars())
        with store.engine.connect() as stuck:  # its session still locks the first row
            stuck.execute(select(deliveries.c.id).where(deliveries.c.id == first).with_for_update())
            with store.atomic() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # waiting would be the bug
                released = outbox.release_in_flight(conn, digest_id, now=now)
            stuck.rollback()
        with store.atomic() as conn:
            released_later = outbox.release_in_flight(conn, digest_id, now=now)
            session = conn.execute(text("SELECT current_setting('application_name')")).scalar()

    assert (released, released_later) == (3, 1)  # the locked one once its session let go
    assert session == f"newsletter pid {os.getpid()}"  # what pg_stat_activity shows


def test_send_now_and_a_worker_deliver_one_digest_together_without_duplicates(
    tmp_path: Path, pg_url: str
):
    # About 200 messages a second: the digest lasts long enough for send-now to start, join
    # the senders and take its share of the connections (a few heartbeats).
    handler = PacedHandler(delay=0.02)
    with (
        SmtpTestServer(handler) as server,
        fleet(tmp_path, pg_url, server.port, 1500, smtp={"connections": 4}) as team,
    ):
        digest_id = team.queue()
        worker = team.start("worker")
        team.wait_for(lambda: len(handler.received) >= 100, "the worker to start delivering")
        sender = team.start("send-now")  # finishes the unfinished digest first: the same one
        send_code = sender.wait(timeout=DEADLINE)
        team.wait_for(lambda: team.digest_state() == "sent", "the digest to be sent")
        worker_code = team.finish(worker)
        rows = team.rows()

    assert send_code == 0, team.log(sender)
    assert worker_code == 0, team.log(worker)
    assert f"resumed digest {digest_id}:" in team.log(sender)
    assert Counter(handler.recipients()) == Counter(team.emails)  # nobody twice
    assert set(owners_pids(rows, "sent")) == {str(worker.pid), str(sender.pid)}


def test_two_workers_together_keep_the_rate_limit_and_the_connection_count(
    tmp_path: Path, pg_url: str
):
    handler = RecordingHandler(clock=time.monotonic)
    rate, count = 20.0, 160  # 8 s: long enough for the second worker to take its share
    with (
        SmtpTestServer(handler) as server,
        fleet(
            tmp_path,
            pg_url,
            server.port,
            count,
            smtp={"connections": 2, "max_per_second": rate, "claim_batch": 2},
        ) as team,
    ):
        team.queue()
        workers = [team.start("worker"), team.start("worker")]
        team.wait_for(lambda: team.digest_state() == "sent", "the digest to be sent")
        codes = [team.finish(w) for w in workers]
        rows = team.rows()

    assert codes == [0, 0], team.logs_text()
    assert Counter(handler.recipients()) == Counter(team.emails)
    assert set(owners_pids(rows, "sent")) == {str(w.pid) for w in workers}  # both sent
    assert handler.max_open_sessions <= 2  # [smtp] connections, for both together
    accepted = sorted(handler.accepted_at)
    # Together no faster than the limit: any second holds about ``rate`` messages.
    busiest = max(sum(1 for t in accepted if start <= t < start + 1.0) for start in accepted)
    assert busiest <= rate + 3
    assert accepted[-1] - accepted[0] >= (count - rate - 3) / rate


def test_on_sqlite_one_sender_delivers_at_a_time_and_the_others_say_so(tmp_path: Path):
    handler = GatedHandler()  # the first worker's first message waits until the others asked
    store = f"sqlite:///{tmp_path / 'newsletter.db'}"
    with SmtpTestServer(handler) as server, fleet(tmp_path, store, server.port, 200) as team:
        team.queue()
        first = team.start("worker")
        team.wait_for(handler.held.is_set, "the first worker to be sending")
        second = team.start("worker")
        sender = team.start("send-now")
        send_code = sender.wait(timeout=DEADLINE)
        team.wait_for(
            lambda: "waiting: another send is running on this database" in team.log(second),
            "the second worker to wait",
        )
        handler.gate.set()
        team.wait_for(lambda: team.digest_state() == "sent", "the digest to be sent")
        codes = [team.finish(first), team.finish(second)]
        rows = team.rows()

    assert codes == [0, 0], team.logs_text()
    send_log = team.log(sender).strip().splitlines()
    assert send_code == 4
    assert send_log[-1].startswith("error: another send is running on this database (")
    assert Counter(handler.recipients()) == Counter(team.emails)
    assert set(owners_pids(rows, "sent")) == {str(first.pid)}  # one sender at a time


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_worker_delivers_confirmation_emails_too_under_their_own_lock(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
):
    url = (
        f"sqlite:///{tmp_path / 'newsletter.db'}"
        if store == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    handler = RecordingHandler()
    with SmtpTestServer(handler) as server, fleet(tmp_path, url, server.port, 3) as team:
        signups = ["ada@example.org", "bob@example.org"]
        for address in signups:
            subscriptions.record_signup(team.ctx, address)
        team.queue()  # and a digest for the three active readers
        worker = team.start("worker", "--once")
        code = worker.wait(timeout=DEADLINE)
        worker_log = team.log(worker)

    assert code == 0, worker_log
    assert Counter(handler.recipients()) == Counter(team.emails + signups)  # each once
    confirmations = [r for r in handler.received if r.rcpt_tos[0] in signups]
    assert len(confirmations) == 2  # transactional: no list fields, unlike the digest's
    assert all(r.parse()["List-Unsubscribe"] is None for r in confirmations)
    with team.ctx.store.atomic() as conn:
        kinds = dict(conn.execute(select(digests.c.kind, digests.c.state)).all())
    assert kinds == {"confirmation": "sent", "digest": "sent"}
    assert "2 confirmation emails sent" in worker_log


HARD_BOUNCE_REPLY = "550 5.1.1 <gone@example.org>: user unknown"


@pytest.mark.parametrize("senders", [2, 6])
def test_senders_finishing_together_decide_the_digest_and_its_bounces_once(
    tmp_path: Path, pg_url: str, senders: int
):
    # On SQLite one sender at a time finishes a digest (the send lock): PostgreSQL only.
    with fleet(tmp_path, pg_url, 2525, 0) as team:  # nothing is sent: no server
        _race_to_settle(team.ctx, senders)


def _race_to_settle(ctx: Context, senders: int) -> None:
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn,
            [("ada@example.org", "", {}), ("gone@example.org", "", {})],
            state=SubscriberState.ACTIVE,
            now=now,
        )
    digest_id = app.send_now(ctx, queue=True).digest_id
    assert digest_id is not None
    with ctx.store.atomic() as conn:
        ids = dict(
            conn.execute(
                select(subscribers.c.email, deliveries.c.id).join(
                    deliveries, deliveries.c.subscriber_id == subscribers.c.id
                )
            ).all()
        )
        outbox.claim(conn, list(ids.values()), now=now, owner="me", lease_until=now)
        outbox.record(
            conn,
            [
                outbox.Outcome(ids["ada@example.org"], DeliveryState.SENT, 1, message_id="<a@x>"),
                outbox.Outcome(
                    ids["gone@example.org"], DeliveryState.FAILED, 1, error=HARD_BOUNCE_REPLY
                ),
            ],
            now=now,
            owner="me",
        )
    start = threading.Barrier(senders)
    results: list[tuple[bool, int]] = []

    def finish() -> None:
        start.wait(timeout=30)
        results.append(settle_digest(ctx, SendReport(digest_id)))

    threads = [threading.Thread(target=finish) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == senders
    assert sorted(decided for decided, _ in results) == [False] * (senders - 1) + [True]
    assert sum(bounced for _, bounced in results) == 1
    with ctx.store.atomic() as conn:
        assert conn.execute(select(digests.c.state)).scalar_one() == "sent"
        bounced = conn.execute(
            select(subscribers.c.email).where(subscribers.c.state == "bounced")
        ).scalars()
        assert list(bounced) == ["gone@example.org"]
