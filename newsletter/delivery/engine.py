"""The outbox engine: parallel SMTP connections fed from the database, resumable at any point.

One coordinator thread owns the database: it claims small chunks of due rows
(``pending -> sending``, committed), hands them to worker threads (one persistent SMTP
connection each) and commits their outcomes in batches as they arrive. Only rows claimed and
not yet recorded can be in ``sending`` when the process dies; those are the only possible
duplicates, and their number is bounded by ``connections * claim_batch * 2``.
"""

from __future__ import annotations

import logging
import queue
import random
import smtplib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from newsletter.config import SmtpSettings
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.smtp import classify, close_quietly, connect
from newsletter.errors import DeliveryError
from newsletter.message import PreparedMessage
from newsletter.models import DeliveryState, Recipient
from newsletter.store import Store, outbox
from newsletter.store.outbox import Outcome

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
FETCH_BATCH = 1000


class Progress(Protocol):
    """Where the engine reports progress (a rich bar in a terminal, log lines otherwise)."""

    def start(self, total: int, done: int) -> None: ...
    def advance(self, sent: int, failed: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def advance(self, sent: int, failed: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class SendReport:
    """What one engine pass did, and what the digest's outbox looks like afterwards."""

    digest_id: int
    sent: int = 0
    failed: int = 0
    retried: int = 0
    interrupted: bool = False
    paused_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return not self.counts.get("pending") and not self.counts.get("sending")


@dataclass(frozen=True)
class _Released:
    """A claimed row the worker did not try (stop requested): back to pending as it was."""

    recipient: Recipient


_Result = Outcome | _Released


class _Worker(threading.Thread):
    """One SMTP connection, reused for many messages; reconnects after a count or a failure."""

    def __init__(self, engine: DeliveryEngine, index: int, first: smtplib.SMTP | None) -> None:
        super().__init__(name=f"smtp-{index}", daemon=True)
        self.engine = engine
        self.client = first
        self.on_connection = 0

    def run(self) -> None:
        engine = self.engine
        try:
            while (chunk := engine.work.get()) is not None:
                for i, recipient in enumerate(chunk):
                    if engine.stop.is_set() or engine.halt.is_set() or not engine.rate.acquire():
                        for rest in chunk[i:]:
                            engine.results.put(_Released(rest))
                        break
                    engine.results.put(self._send(recipient))
        finally:
            close_quietly(self.client)

    def _send(self, recipient: Recipient) -> Outcome:
        engine = self.engine
        settings = engine.smtp
        attempts = recipient.attempts + 1
        envelope = engine.message.personalize(recipient, now=engine.clock())
        try:
            if self.client is None or self.on_connection >= settings.reconnect_after:
                close_quietly(self.client)
                self.client, self.on_connection = None, 0
                self.client = connect(settings)
            self.client.sendmail(envelope.sender, [envelope.recipient], envelope.data)
            self.on_connection += 1
            return Outcome(
                recipient.delivery_id, DeliveryState.SENT, attempts, message_id=envelope.message_id
            )
        except DeliveryError as exc:  # could not (re)connect or log in
            return engine.temporary(recipient, attempts, str(exc), connection=True)
        except (OSError, smtplib.SMTPException) as exc:
            failure = classify(exc, envelope.recipient)
            if failure.connection_lost:
                close_quietly(self.client)
                self.client = None
            elif self.client is not None:
                self._reset()
            if failure.permanent:
                return Outcome(
                    recipient.delivery_id, DeliveryState.FAILED, attempts, error=failure.reason
                )
            return engine.temporary(
                recipient, attempts, failure.reason, connection=failure.connection_lost
            )

    def _reset(self) -> None:
        # After a refused recipient the transaction is still open on some servers.
        try:
            assert self.client is not None
            self.client.rset()
        except (OSError, smtplib.SMTPException):
            close_quietly(self.client)
            self.client = None


class DeliveryEngine:
    """Sends one digest's outbox. Create one per send; ``stop`` ends it after in-flight messages."""

    def __init__(
        self,
        store: Store,
        smtp: SmtpSettings,
        message: PreparedMessage,
        *,
        clock: Clock,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
        on_batch: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.smtp = smtp
        self.message = message
        self.clock = clock
        self.stop = stop or threading.Event()
        self.halt = threading.Event()  # paused after too many consecutive failures
        self.progress = progress or NoProgress()
        self.on_batch = on_batch
        self.rng = rng or random.Random()
        self.rate = RateLimiter(smtp.max_per_second, stop=self.stop)
        self.work: queue.Queue[list[Recipient] | None] = queue.Queue(maxsize=smtp.connections)
        self.results: queue.Queue[_Result] = queue.Queue()
        self._consecutive_failures = 0
        self._pause_reason: str | None = None
        self._in_flight = 0  # claimed rows handed to workers whose outcome is not recorded yet

    # -- called from worker threads -------------------------------------------------------
    def temporary(
        self, recipient: Recipient, attempts: int, reason: str, *, connection: bool
    ) -> Outcome:
        """A retry later with exponential backoff and jitter, or failed after max_attempts."""
        if attempts >= self.smtp.max_attempts:
            return Outcome(
                recipient.delivery_id,
                DeliveryState.FAILED,
                attempts,
                error=f"gave up after {attempts} attempts: {reason}",
            )
        backoff = min(
            self.smtp.retry_max_seconds, self.smtp.retry_base_seconds * 2 ** (attempts - 1)
        )
        delay = backoff * (0.5 + self.rng.random())
        return Outcome(
            recipient.delivery_id,
            DeliveryState.PENDING,
            attempts,
            error=("connection: " if connection else "") + reason,
            next_attempt_at=self.clock() + timedelta(seconds=delay),
        )

    # -- coordinator ----------------------------------------------------------------------
    def run(self, digest_id: int, *, first_connection: smtplib.SMTP | None = None) -> SendReport:
        """Send every due row of the digest's outbox, waiting for retries; see ``SendReport``."""
        report = SendReport(digest_id)
        with self.store.atomic() as conn:
            released = outbox.release_in_flight(conn, digest_id, now=self.clock())
            skipped = outbox.skip_inactive(conn, digest_id, now=self.clock())
            counts = outbox.counts(conn, digest_id)
        if released:
            log.warning(
                "digest %s: %d messages were in flight when the last run stopped; "
                "they are sent again (the only possible duplicates)",
                digest_id,
                released,
            )
        if skipped:
            log.info("digest %s: skipped %d subscribers who left meanwhile", digest_id, skipped)
        total = sum(counts.values())
        self.progress.start(total, total - counts.get("pending", 0))
        workers = [
            _Worker(self, i, first_connection if i == 0 else None)
            for i in range(self.smtp.connections)
        ]
        for worker in workers:
            worker.start()
        try:
            for chunk in self._due_chunks(digest_id, report):
                self._in_flight += len(chunk)
                while True:
                    try:
                        self.work.put(chunk, timeout=0.05)
                        break
                    except queue.Full:
                        self._collect(report, block=True)
                self._collect(report, block=False)
        finally:
            for _ in workers:
                self.work.put(None)
            while self._in_flight > 0:
                self._collect(report, block=True)
            for worker in workers:
                worker.join()
            self.progress.finish()
        report.interrupted = self.stop.is_set()
        report.paused_reason = self._pause_reason
        with self.store.atomic() as conn:
            report.counts = outbox.counts(conn, digest_id)
        return report

    def _due_chunks(self, digest_id: int, report: SendReport) -> Iterator[list[Recipient]]:
        """Claimed chunks of due rows, in id order; waits for retry times when only those remain."""
        cursor = 0
        while not (self.stop.is_set() or self.halt.is_set()):
            with self.store.atomic() as conn:
                due = outbox.fetch_due(
                    conn, digest_id, now=self.clock(), after_id=cursor, limit=FETCH_BATCH
                )
            if due:
                cursor = due[-1].delivery_id
                size = self.smtp.claim_batch
                for start in range(0, len(due), size):
                    chunk = due[start : start + size]
                    with self.store.atomic() as conn:
                        claimed = outbox.claim(
                            conn, [r.delivery_id for r in chunk], now=self.clock()
                        )
                    mine = [r for r in chunk if r.delivery_id in claimed]
                    if mine:
                        yield mine
                    if self.stop.is_set() or self.halt.is_set():
                        return
                continue
            # Nothing due after the cursor: wait for in-flight results, then for retry times.
            if not self._wait_for_retries(digest_id, report):
                return
            cursor = 0

    def _wait_for_retries(self, digest_id: int, report: SendReport) -> bool:
        """Block until the next pending row is due; False when no pending rows remain."""
        # In-flight results may put rows back to pending, so settle them first.
        while self._in_flight > 0:
            self._collect(report, block=True)
        if self.stop.is_set() or self.halt.is_set():
            return False
        with self.store.atomic() as conn:
            next_at = outbox.next_retry_at(conn, digest_id)
        if next_at is None:
            return False
        wait = (next_at - self.clock()).total_seconds()
        if wait > 0:
            log.info("digest %s: waiting %.1f s for the next retry", digest_id, wait)
            if self.stop.wait(wait):
                return False
        return True

    def _collect(self, report: SendReport, *, block: bool) -> int:
        """Record the outcomes that have arrived, in one transaction. Returns how many."""
        items: list[_Result] = []
        try:
            if block:
                items.append(self.results.get(timeout=0.2))
            while True:
                items.append(self.results.get_nowait())
        except queue.Empty:
            pass
        if not items:
            return 0
        self._in_flight -= len(items)
        outcomes = [i for i in items if isinstance(i, Outcome)]
        released = [i.recipient for i in items if isinstance(i, _Released)]
        now = self.clock()
        with self.store.atomic() as conn:
            outbox.record(conn, outcomes, now=now)
            if released:
                outbox.record(
                    conn,
                    [Outcome(r.delivery_id, DeliveryState.PENDING, r.attempts) for r in released],
                    now=now,
                )
        sent = sum(o.state is DeliveryState.SENT for o in outcomes)
        failed = sum(o.state is DeliveryState.FAILED for o in outcomes)
        report.sent += sent
        report.failed += failed
        report.retried += len(outcomes) - sent - failed
        self._track_failures(outcomes)
        self.progress.advance(sent, failed)
        if self.on_batch is not None:
            self.on_batch()
        return len(items)

    def _track_failures(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.state is DeliveryState.SENT:
                self._consecutive_failures = 0
            elif o.state is DeliveryState.PENDING or (o.error or "").startswith("gave up"):
                self._consecutive_failures += 1
                if (
                    self._consecutive_failures >= self.smtp.pause_after_failures
                    and not self.halt.is_set()
                ):
                    self._pause_reason = (
                        f"{self._consecutive_failures} deliveries in a row failed "
                        f"(last: {o.error}); the send is paused and resumes with the next run"
                    )
                    self.halt.set()
