"""The outbox engine: parallel SMTP connections fed from the database, resumable at any point.

One coordinator thread owns the database. Worker threads each own one persistent SMTP
connection (reused for ``reconnect_after`` messages, replaced after a failure), pipelined when
the server offers PIPELINING, and send the chunks of rows the coordinator hands them; they
never touch the database (:mod:`newsletter.delivery.worker`). Connections come from an
:class:`~newsletter.delivery.smtp.SmtpConnector` (the caller's, whose first connection was
opened to check the server, or a new one).

The coordinator works in short transactions that do two things at once: record the outcomes
the workers reported since the last one, and claim the next rows (``pending -> sending``). A
row reaches a worker only after its claim is committed; its outcome is committed when a
connection finishes a chunk of ``claim_batch`` rows, and at least every ``TICK_SECONDS``.

Possible duplicates (the resume guarantee)
------------------------------------------
Killed at any point (SIGKILL included), the database holds every delivery the server accepted
as ``sent``, except the rows still ``sending``. The next run puts those back to ``pending``
(logging how many) and sends them with the rest; it never sends a ``sent`` row again and
misses no ``pending`` one. So the only possible duplicates are the rows caught in
``sending``, and there are at most ``2 * connections * claim_batch`` of them at any time
(64 with the defaults): one chunk being sent and one waiting per connection. Of those, only
the messages the server had accepted whose outcome was not committed yet really arrive twice:
the ones accepted since the last commit (every chunk, at least every ``TICK_SECONDS``), plus
at most one per connection whose reply was still on its way. Pipelining does not change
this: a connection has at most two messages on the wire, and the second one's content has
not left yet. A smaller ``claim_batch`` lowers both bounds and costs more transactions.

A stop (Ctrl-C, SIGTERM: ``stop.set()``) lets each connection finish the messages it has on
the wire (one, or two when pipelining), returns every other claimed row to ``pending`` and
records everything: a clean stop leaves no row in ``sending`` and nothing to send twice.

Failures
--------
Temporary failures (4xx, a dropped connection, a timeout, no connection at all) go back to
``pending`` with a retry time (exponential backoff with jitter) until ``max_attempts``; a 5xx
for a recipient fails that recipient only, and so does any other error while building or
sending one recipient's message (an address that cannot be sent, no SMTPUTF8, a bug).
``pause_after_failures`` outcomes in a row that are not a success pause the send (the server
is down, the credentials were revoked, every recipient is refused): claimed rows go back to
``pending`` and the next run resumes.

Several senders
---------------
Several engines, in several processes or hosts, may work on one outbox at once (``newsletter
worker``, ``send-now``). Each claim is a lease (:mod:`newsletter.delivery.leases`): the row
names this engine's ``owner`` and when the claim lapses; the coordinator renews its rows and
records outcomes only on rows still its own. Due rows are claimed with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so engines take different rows without waiting for each other. Rows
whose lease lapsed, or whose sender is known to be gone, go back to pending and are sent
again: the bound above holds per sender that died or stalled. Each engine keeps to its part
of ``connections`` and ``max_per_second`` and slows down when the server asks
(:mod:`newsletter.delivery.sender_limits`); a throttled message goes back to ``pending`` for
a short while and never fails for it. When nothing is left to claim, an engine that
``wait_for_retries`` waits for the retries and for the rows other senders hold (until they
are recorded, or their lease lapses and it takes them over); one that does not returns,
leaving both to later passes. An engine that finds its digest paused (or finished) by
another sender stops like a paused one.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from newsletter.config import SmtpSettings
from newsletter.delivery.leases import DEFAULT_LEASE_SECONDS, LeaseKeeper, new_owner
from newsletter.delivery.report import NoProgress, Progress, SendReport
from newsletter.delivery.sender_limits import SenderLimits
from newsletter.delivery.shares import Share
from newsletter.delivery.smtp import SmtpConnector
from newsletter.delivery.throttle import AdaptiveThrottle
from newsletter.delivery.worker import Clock, Released, Result, Shared, SmtpWorker
from newsletter.message import PreparedMessage
from newsletter.models import DeliveryState, Recipient, SubscriberState
from newsletter.store import Store, outbox
from newsletter.store.locks import running_owner
from newsletter.store.outbox import Outcome

log = logging.getLogger(__name__)

FETCH_BATCH = 1000  # due rows read ahead of claiming (kept in memory, never more)
TICK_SECONDS = 0.05  # outcomes wait at most about this long (or one chunk) to be committed
WAIT_SLICE_SECONDS = 2.0  # long waits are cut into slices (lock refresh, heartbeat)
SHUTDOWN_GRACE_SECONDS = 5.0  # on an error, wait this long (plus the SMTP timeout) for workers
THROTTLE_QUIET_SECONDS = 30.0  # after a throttle reply, this long without one: a step back up
OTHERS_POLL_SECONDS = 0.5  # waiting on rows other senders hold: how often to look again
_EPOCH = datetime.min.replace(tzinfo=UTC)


class DeliveryEngine:
    """Sends one digest's outbox. Create one per send; ``stop`` ends it after in-flight messages.

    ``audience``: the state a subscriber must be in to get the message (``active`` for a
    digest, ``pending`` for a confirmation email). ``owner`` names this send on the rows it
    claims (a new one by default); ``lease_seconds`` is how long a claim lasts unless renewed.
    ``share`` is called now and then for this sender's part of the SMTP limits (None: all of
    them). Without ``wait_for_retries`` the run ends once nothing is due, leaving retries and
    rows other senders hold to later runs.
    """

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
        connector: SmtpConnector | None = None,
        throttle: AdaptiveThrottle | None = None,
        audience: SubscriberState = SubscriberState.ACTIVE,
        owner: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        share: Callable[[], Share | None] | None = None,
        wait_for_retries: bool = True,
    ) -> None:
        self.store = store
        self.audience = audience
        self.leases = LeaseKeeper(owner or new_owner(), lease_seconds)
        self.owner = self.leases.owner
        self.wait_for_retries = wait_for_retries
        self.smtp = smtp
        self.message = message
        self.clock = clock
        self.stop = stop or threading.Event()
        self.halt = threading.Event()  # paused, or a worker failed: finish in-flight and stop
        self.progress = progress or NoProgress()
        self.on_batch = on_batch
        self.rng = rng or random.Random()
        self.throttle = throttle or AdaptiveThrottle(
            max_per_second=smtp.max_per_second,
            connections=smtp.connections,
            quiet_seconds=THROTTLE_QUIET_SECONDS,
        )
        self.inbox: queue.SimpleQueue[list[Recipient] | None] = queue.SimpleQueue()
        self.limits = SenderLimits(smtp, self.throttle, self.inbox, share)
        self.gate = self.limits.gate
        self.results: deque[Result] = deque()  # appended by workers, drained by the coordinator
        self.wake = threading.Event()  # a worker finished a chunk
        self._claimed = 0  # rows in ``sending`` in the database (claimed, outcome not recorded)
        self._finished: list[Result] = []  # outcomes reported but not recorded yet
        self._consecutive_failures = 0
        self._pause_reason: str | None = None
        self._worker_error: BaseException | None = None
        self._due_horizon = _EPOCH
        self._conn: Connection | None = None
        self.shared = Shared(  # the same objects, as the workers see them
            smtp=smtp,
            message=message,
            clock=clock,
            rng=self.rng,
            throttle=self.throttle,
            gate=self.gate,
            connector=connector or SmtpConnector(smtp),
            stop=self.stop,
            halt=self.halt,
            inbox=self.inbox,
            results=self.results,
            wake=self.wake,
            on_error=self.worker_failed,
            leased=self.leases.valid,
        )

    # -- called from worker threads -------------------------------------------------------
    def worker_failed(self, exc: BaseException) -> None:
        if self._worker_error is None:
            self._worker_error = exc
        self.halt.set()

    # -- coordinator ----------------------------------------------------------------------
    def run(self, digest_id: int) -> SendReport:
        """Send every due row of the digest's outbox, waiting for retries; see ``SendReport``."""
        with running_owner(self.owner):  # our leases are not "gone" while this runs
            return self._run(digest_id)

    def _run(self, digest_id: int) -> SendReport:
        report = SendReport(digest_id)
        self.limits.label = digest_id
        now = self.clock()
        with self.store.atomic() as conn:
            released = outbox.release_in_flight(conn, digest_id, now=now)
            skipped = outbox.skip_inactive(conn, digest_id, now=now, audience=self.audience)
            counts = outbox.counts(conn, digest_id)
        self._released(report, released)
        if skipped:
            log.info("digest %s: skipped %d subscribers who left meanwhile", digest_id, skipped)
        total = sum(counts.values())
        self.limits.follow()
        self.progress.start(total, total - counts.get("pending", 0))
        workers = [SmtpWorker(self.shared, i) for i in range(self.smtp.connections)]
        for worker in workers:
            worker.start()
        try:
            with self.store.engine.connect() as conn:  # the coordinator's own connection
                self._conn = conn
                self._coordinate(digest_id, report)
        except KeyboardInterrupt:
            # A second Ctrl-C: leave now. Rows still ``sending`` go back to pending next run.
            self.halt.set()
            self.gate.close()
            for _ in workers:
                self.inbox.put(None)
            raise
        except BaseException:
            self.halt.set()
            self._settle_after_error(report)
            self._stop_workers(workers, timeout=self.smtp.timeout + SHUTDOWN_GRACE_SECONDS)
            raise
        finally:
            self.progress.finish()
        self._stop_workers(workers, timeout=None)
        if self._worker_error is not None:
            raise self._worker_error
        report.interrupted = self.stop.is_set()
        report.paused_reason = self._pause_reason
        with self.store.atomic() as conn:
            report.counts = outbox.counts(conn, digest_id)
        return report

    def _coordinate(self, digest_id: int, report: SendReport) -> None:
        """Record outcomes and claim rows until nothing is due, then wait for retries."""
        cursor = 0  # rows are read in id order; retries are picked up on the next pass
        exhausted = False  # no due row after the cursor
        while True:
            self._drain(report)
            if self._claimed and self.leases.renew_due():
                self._renew(digest_id)
            stopping = self.stop.is_set() or self.halt.is_set()
            busy = self._claimed - len(self._finished)  # claimed rows not finished yet
            room = (
                0
                if stopping or exhausted or self.limits.no_share
                else self.limits.max_claimed - busy
            )
            want = room if room >= max(1, self.limits.max_claimed // 2) else 0
            if want or self._finished:
                claimed: list[Recipient] = []
                now = self.clock()
                with self._transaction() as conn:
                    self._record(conn, now)
                    if want and not outbox.digest_is_sending(conn, digest_id):
                        self._leave_paused_digest(digest_id)
                        want = 0
                    while len(claimed) < want:
                        rows = outbox.claim_due(
                            conn,
                            digest_id,
                            owner=self.owner,
                            now=now,
                            due_by=max(now, self._due_horizon),
                            lease_until=self.leases.until(now),
                            after_id=cursor,
                            limit=min(FETCH_BATCH, want - len(claimed)),
                            audience=self.audience,
                        )
                        if not rows:
                            exhausted = True
                            break
                        cursor = rows[-1].delivery_id
                        claimed.extend(rows)
                # Committed: only now may the claimed rows reach a worker.
                self.leases.claimed(held_before=self._claimed)
                self._claimed += len(claimed)
                size = self.smtp.claim_batch
                for start in range(0, len(claimed), size):
                    self.inbox.put(claimed[start : start + size])
                self._after_transaction()
                if claimed:
                    continue
            if self._claimed == 0:
                if stopping:
                    return
                if self.limits.no_share and not exhausted:
                    if not self.wait_for_retries or self.stop.wait(OTHERS_POLL_SECONDS):
                        return  # no connection of ours: the other senders carry on
                    self._after_transaction()
                    continue
                if exhausted:
                    if not self._wait_for_retries(digest_id, report):
                        return
                    cursor, exhausted = 0, False
                    continue
            self.wake.wait(TICK_SECONDS)
            self.wake.clear()
            self._after_transaction()

    def _renew(self, digest_id: int) -> None:
        """Extend the leases of every row this send holds; stop if some were taken over (this
        send stalled past its lease) or another sender paused the digest."""
        now = self.clock()
        with self._transaction() as conn:
            renewed = outbox.renew(
                conn, digest_id, self.owner, now=now, lease_until=self.leases.until(now)
            )
            sending = outbox.digest_is_sending(conn, digest_id)
        self.leases.renewed()
        if renewed < self._claimed and not self.halt.is_set():
            log.warning(
                "digest %s: another sender took over %d rows of this one, whose lease had "
                "lapsed (it stalled); this one stops and leaves them to it",
                digest_id,
                self._claimed - renewed,
            )
            self.halt.set()
        if not sending:
            self._leave_paused_digest(digest_id)

    def _leave_paused_digest(self, digest_id: int) -> None:
        if not self.halt.is_set():
            log.info(
                "digest %s is no longer sending (another sender paused or finished it); leaving it",
                digest_id,
            )
            self.halt.set()

    def _released(self, report: SendReport, released: int) -> None:
        if not released:
            return
        report.released_in_flight += released
        log.warning(
            "digest %s: %d messages were in flight when their sender stopped; "
            "they are sent again (the only possible duplicates)",
            report.digest_id,
            released,
        )

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One committed transaction on the coordinator's connection, like ``Store.atomic``."""
        assert self._conn is not None
        with self.store.atomic_on(self._conn) as conn:
            yield conn

    def _drain(self, report: SendReport) -> None:
        """Take what the workers reported; count it and watch for failures in a row."""
        results = self.results
        if not results:
            return
        sent = failed = 0
        limit = self.smtp.pause_after_failures
        while results:
            item = results.popleft()
            self._finished.append(item)
            if isinstance(item, Released):
                continue
            if item.state is DeliveryState.SENT:
                sent += 1
                self._consecutive_failures = 0
                continue
            if item.state is DeliveryState.FAILED:
                failed += 1
            else:
                report.retried += 1
            self._consecutive_failures += 1
            if self._consecutive_failures >= limit and not self.halt.is_set():
                self._pause_reason = (
                    f"{self._consecutive_failures} deliveries in a row failed "
                    f"(last: {item.error}); the send is paused and resumes with the next run"
                )
                log.warning("digest paused: %s", self._pause_reason)
                self.halt.set()
        report.sent += sent
        report.failed += failed
        if sent or failed:
            self.progress.advance(sent, failed)

    def _record(self, conn: Connection, now: datetime) -> None:
        finished, self._finished = self._finished, []
        if not finished:
            return
        outcomes = [o for o in finished if isinstance(o, Outcome)]
        outbox.record(conn, outcomes, now=now, owner=self.owner)
        released = [r.delivery_id for r in finished if isinstance(r, Released)]
        outbox.release(conn, released, now=now, owner=self.owner)
        self._claimed -= len(finished)

    def _after_transaction(self) -> None:
        if self.on_batch is not None:
            self.on_batch()
        self.limits.follow()

    def _wait_for_retries(self, digest_id: int, report: SendReport) -> bool:
        """Block until the next pending row is due, or until rows other senders hold are
        recorded or theirs to take over; False when nothing is left for this run (or on stop)."""
        now = self.clock()
        with self._transaction() as conn:
            released = outbox.release_in_flight(conn, digest_id, now=now)
            skipped = outbox.skip_inactive(conn, digest_id, now=now, audience=self.audience)
            next_at = outbox.next_retry_at(conn, digest_id)
            elsewhere, lapse_at = outbox.in_flight_elsewhere(conn, digest_id, self.owner)
        self._released(report, released)
        if skipped:
            log.info("digest %s: skipped %d subscribers who left meanwhile", digest_id, skipped)
        if released:
            return not self.stop.is_set()
        if next_at is None and not elsewhere:
            return False
        if not self.wait_for_retries:
            return next_at is not None and next_at <= now and not self.stop.is_set()
        wake_at = [next_at] if next_at is not None else []
        if elsewhere:  # look again soon: they may be recorded, or lapse and be ours to send
            wake_at += [now + timedelta(seconds=OTHERS_POLL_SECONDS)]
            wake_at += [lapse_at] if lapse_at is not None else []
        until = min(wake_at)
        wait = (until - now).total_seconds()
        if wait > 0:
            if next_at is not None and until == next_at:
                log.info("digest %s: waiting %.1f s for the next retry", digest_id, wait)
            deadline = time.monotonic() + wait
            slice_seconds = min(WAIT_SLICE_SECONDS, self.leases.renew_every)
            while (left := deadline - time.monotonic()) > 0:
                if self.stop.wait(min(left, slice_seconds)):
                    return False
                self._after_transaction()  # keeps the send lock and heartbeat fresh
        if next_at is not None and until >= next_at:
            # Rows due at ``next_at`` are due now, even if the clock did not move (a test clock).
            self._due_horizon = max(self._due_horizon, next_at)
        return not self.stop.is_set()

    def _settle_after_error(self, report: SendReport) -> None:
        """After a coordinator error: wait for the workers to give their rows back, record."""
        deadline = time.monotonic() + self.smtp.timeout + SHUTDOWN_GRACE_SECONDS
        try:
            while time.monotonic() < deadline:
                self._drain(report)
                if self._claimed - len(self._finished) <= 0:
                    break
                self.wake.wait(TICK_SECONDS)
                self.wake.clear()
            with self.store.atomic() as conn:
                self._record(conn, self.clock())
        except Exception:  # the original error matters more; rows left are released next run
            log.exception("could not record the last outcomes; the next run resends them")

    def _stop_workers(self, workers: Sequence[SmtpWorker], *, timeout: float | None) -> None:
        self.gate.close()  # workers waiting for a connection slot go and find their end
        for _ in workers:
            self.inbox.put(None)
        for worker in workers:
            worker.join(timeout)
