"""Resume after any stop: SIGKILL mid-send, a clean stop (Ctrl-C/SIGTERM), a crash, a lost lock.

The guarantee: nobody already ``sent`` gets the digest again and nobody is missed; the only
possible duplicates are the rows caught in ``sending``, at most 2 * connections * claim_batch.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select, update

from newsletter import app
from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.errors import SendInProgress
from newsletter.message import PreparedMessage
from newsletter.models import Recipient, SubscriberState
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import deliveries, digests, locks, subscribers
from newsletter.subscribers import import_csv
from tests.conftest import REPO, clear_newsletter_env, write_config
from tests.pipelining_servers import advertise_pipelining
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

CONNECTIONS = 2
CLAIM_BATCH = 16


@pytest.fixture(params=["plain", "pipelining"])
def smtp_flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Against a server without PIPELINING and one offering it (the in-process tests; the
    pipelined SIGKILL and stop are in tests/test_send_pipelining.py)."""
    if request.param == "pipelining":
        advertise_pipelining(monkeypatch)
    return str(request.param)


@dataclass
class PacedHandler(RecordingHandler):
    """Accepts everything, a little slowly, and can run a hook after the n-th message."""

    delay: float = 0.0
    after: dict[int, threading.Event] = field(default_factory=dict)  # n -> event to set

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            event = self.after.get(len(self.received))
        if event is not None:
            event.set()
        return reply


def emails_by_state(ctx: Context) -> dict[str, set[str]]:
    with ctx.store.atomic() as conn:
        rows = conn.execute(
            select(subscribers.c.email, deliveries.c.state).join(
                subscribers, subscribers.c.id == deliveries.c.subscriber_id
            )
        ).all()
    found: dict[str, set[str]] = {}
    for email, state in rows:
        found.setdefault(state, set()).add(email)
    return found


def add_readers(ctx: Context, count: int) -> list[str]:
    emails = [f"reader{i:05d}@example.org" for i in range(count)]
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn,
            [(e, f"Reader {i}", {}) for i, e in enumerate(emails)],
            state=SubscriberState.ACTIVE,
            now=ctx.clock(),
        )
    return emails


def cli_setup(
    folder: Path, port: int, count: int, *, store_url: str | None = None
) -> tuple[Path, Context]:
    """A config file for ``send-now`` to ``port`` and a context on its database (``store_url``,
    else a SQLite file in ``folder``), where ``count`` readers (``reader00000@example.org``,
    ...) were imported."""
    config = write_config(
        folder / "newsletter.toml",
        store={"url": store_url or f"sqlite:///{folder / 'newsletter.db'}"},
        smtp={
            "port": port,
            "connections": CONNECTIONS,
            "claim_batch": CLAIM_BATCH,
            "retry_base_seconds": 0.01,
        },
        logging={"level": "INFO"},
    )
    ctx = Context.open(load_settings(config))
    try:
        people = folder / "people.csv"
        people.write_text(
            "email,name\n" + "".join(f"reader{i:05d}@example.org,R {i}\n" for i in range(count)),
            encoding="utf-8",
        )
        assert import_csv(ctx.store, people, now=ctx.clock()).imported == count
    except BaseException:
        ctx.close()
        raise
    return config, ctx


def start_send_now(config: Path) -> subprocess.Popen[bytes]:
    """``newsletter send-now`` in a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(config), "send-now"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def signal_when(
    child: subprocess.Popen[bytes], arrived: Callable[[], int], target: float, signum: int
) -> int:
    """Send ``signum`` once ``arrived()`` (the server's count) reaches ``target``; the exit code."""
    try:
        deadline = time.monotonic() + 60
        while arrived() < target:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the send never got going"
            time.sleep(0.01)  # polling the server's count, not timing the test
        child.send_signal(signum)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@dataclass
class CliSend:
    """``newsletter send-now`` in a child process, against a real server, on a shared DB."""

    config: Path
    ctx: Context
    handler: PacedHandler
    count: int

    @property
    def everyone(self) -> set[str]:
        return {f"reader{i:05d}@example.org" for i in range(self.count)}

    def start(self) -> subprocess.Popen[bytes]:
        return start_send_now(self.config)

    def signal_at(self, child: subprocess.Popen[bytes], share: float, signum: int) -> int:
        """Send ``signum`` once the server has received ``share`` of the list; the exit code."""
        return signal_when(child, lambda: len(self.handler.received), self.count * share, signum)


@pytest.fixture
def cli_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Iterator[CliSend]:
    clear_newsletter_env(monkeypatch)
    count = 2000
    handler = PacedHandler(delay=0.002)  # aiosmtpd, a little slow: the signal lands mid-send
    with SmtpTestServer(handler) as server:
        config, ctx = cli_setup(tmp_path, server.port, count, store_url=store_url)
        try:
            yield CliSend(config, ctx, handler, count)
        finally:
            ctx.close()


def test_sigkill_mid_send_then_resume_misses_nobody_and_repeats_only_sending_rows(
    cli_send: CliSend,
):
    ctx, handler = cli_send.ctx, cli_send.handler

    code = cli_send.signal_at(cli_send.start(), 0.3, signal.SIGKILL)

    assert code == -signal.SIGKILL
    assert len(handler.received) < cli_send.count, "the kill landed after the send had finished"
    states = emails_by_state(ctx)
    in_flight = states.get("sending", set())
    assert len(in_flight) <= CONNECTIONS * CLAIM_BATCH * 2
    assert states.get("sent"), "outcomes are committed while sending"

    summary = app.send_now(ctx)  # the next run finishes the unfinished digest first

    assert [r.released_in_flight for r in summary.resumed] == [len(in_flight)]
    assert summary.resumed[0].counts == {"sent": cli_send.count}
    received = Counter(handler.recipients())
    assert set(received) == cli_send.everyone
    assert {email for email, n in received.items() if n > 1} <= in_flight
    assert max(received.values()) <= 2
    # A duplicate carries the same Message-ID, so mail clients show it once.
    ids: dict[str, set[str]] = {}
    for message in handler.received:
        ids.setdefault(message.rcpt_tos[0], set()).add(message.parse()["Message-ID"])
    assert all(len(found) == 1 for found in ids.values())


# On SQLite only: ~20 s a run; on PostgreSQL the kill -9 test above and the in-process stop
# below cover what the store does when a send stops.
@pytest.mark.sqlite_store
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_after_the_messages_in_flight(cli_send: CliSend, signum: int):
    ctx, handler = cli_send.ctx, cli_send.handler
    child = cli_send.start()

    code = cli_send.signal_at(child, 0.3, signum)

    # 130 for Ctrl-C, 143 for SIGTERM: a scheduler sees the send did not finish.
    assert code == 128 + signum
    assert child.stdout is not None and child.stderr is not None
    out, err = child.stdout.read().decode(), child.stderr.read().decode()
    assert f"{signal.Signals(signum).name}: stopping after the messages in flight" in err
    assert "stopped early (resumable with send-now)" in out
    states = emails_by_state(ctx)
    assert "sending" not in states
    assert states["sent"] == set(handler.recipients())  # recorded exactly what arrived

    summary = app.send_now(ctx)

    assert summary.resumed[0].released_in_flight == 0
    assert summary.resumed[0].counts == {"sent": cli_send.count}
    assert Counter(handler.recipients()) == Counter(cli_send.everyone)  # nobody twice


def test_a_stop_finishes_in_flight_messages_and_the_next_run_sends_the_rest(make_context):
    stop = threading.Event()
    handler = PacedHandler(after={25: stop})  # the 25th accepted message "presses Ctrl-C"
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        everyone = add_readers(ctx, 100)

        first = app.send_now(ctx, stop=stop)

        assert first.interrupted and first.report is not None
        states = emails_by_state(ctx)
        assert "sending" not in states  # a clean stop leaves nothing in flight
        assert states["sent"] == set(handler.recipients())  # recorded exactly what arrived
        # Only the messages in flight when the stop came were finished after it.
        assert 25 <= len(states["sent"]) <= 25 + 2
        assert first.report.counts == {
            "sent": len(states["sent"]),
            "pending": 100 - len(states["sent"]),
        }

        second = app.send_now(ctx)

    assert not second.interrupted and [r.counts for r in second.resumed] == [{"sent": 100}]
    assert second.resumed[0].released_in_flight == 0
    assert Counter(handler.recipients()) == Counter(everyone)  # nobody twice, nobody missed


@pytest.mark.usefixtures("smtp_flavour")
def test_a_bug_while_personalizing_one_message_fails_only_that_delivery(
    make_context, monkeypatch: pytest.MonkeyPatch
):
    original = PreparedMessage.personalize

    def personalize(self: PreparedMessage, recipient: Recipient, **kwargs: object):
        if recipient.email == "reader00030@example.org":
            raise RuntimeError("template bug")
        return original(self, recipient, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PreparedMessage, "personalize", personalize)
    handler = RecordingHandler()
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 2, "claim_batch": 4})
        everyone = add_readers(ctx, 80)

        summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 79, "failed": 1}
    states = emails_by_state(ctx)
    assert states["failed"] == {"reader00030@example.org"}
    assert states["sent"] == set(everyone) - states["failed"] == set(handler.recipients())
    with ctx.store.atomic() as conn:
        error = conn.execute(
            select(deliveries.c.last_error).where(deliveries.c.state == "failed")
        ).scalar_one()
        assert conn.execute(select(digests.c.state)).scalar_one() == "sent"
    assert error == "cannot build the message: RuntimeError: template bug"


@pytest.mark.usefixtures("smtp_flavour")
def test_a_send_that_lost_its_lock_stops(make_context, clock):
    taken = threading.Event()
    handler = PacedHandler(after={10: taken})
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 1, "claim_batch": 2})
        add_readers(ctx, 60)

        def thief() -> None:
            taken.wait(30)
            with ctx.store.atomic() as conn:  # another process took over the lock...
                conn.execute(update(locks).values(owner="elsewhere:1"))
            clock.advance(minutes=1)  # ...and it is time to refresh ours

        steal = threading.Thread(target=thief)
        steal.start()
        with pytest.raises(SendInProgress, match="another process took over the send lock"):
            app.send_now(ctx)
        steal.join()

    states = emails_by_state(ctx)
    assert "sending" not in states
    assert len(states["sent"]) < 60
    assert states["sent"] == set(handler.recipients())
    with ctx.store.atomic() as conn:
        assert conn.execute(select(digests.c.state)).scalar_one() == "sending"


@pytest.mark.usefixtures("smtp_flavour")
def test_subscribers_who_leave_during_a_send_are_skipped_when_it_resumes(make_context):
    stop = threading.Event()
    handler = PacedHandler(after={10: stop})
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 1, "claim_batch": 2})
        everyone = add_readers(ctx, 30)
        app.send_now(ctx, stop=stop)
        leaving = everyone[-1]
        with ctx.store.atomic() as conn:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.email == leaving)
                .values(state=SubscriberState.UNSUBSCRIBED.value)
            )

        summary = app.send_now(ctx)

    assert summary.resumed[0].counts == {"sent": 29, "failed": 1}
    assert leaving not in handler.recipients()
    assert Counter(handler.recipients()) == Counter(everyone[:-1])


@pytest.mark.usefixtures("smtp_flavour")
def test_a_second_send_in_the_same_process_is_refused_while_one_runs(make_context):
    running = threading.Event()
    handler = PacedHandler(delay=0.05, after={1: running})
    with SmtpTestServer(handler) as server:
        ctx = make_context(smtp={"port": server.port, "connections": 1})
        everyone = add_readers(ctx, 20)
        results: list[app.SendSummary] = []
        first = threading.Thread(target=lambda: results.append(app.send_now(ctx)))
        first.start()
        try:
            assert running.wait(30)
            with pytest.raises(SendInProgress, match="another send is running on this database"):
                app.send_now(ctx)
        finally:
            first.join(60)

    assert results and results[0].report is not None
    assert results[0].report.counts == {"sent": 20}
    assert Counter(handler.recipients()) == Counter(everyone)
