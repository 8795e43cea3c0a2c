"""``newsletter worker``: deliver the outboxes of unfinished mailings, whoever queued them.

Confirmation emails first, as ``send-now`` and ``run`` do (:mod:`newsletter.app.confirmations`,
under their own lock: one process at a time delivers them, another worker finds it taken and
goes on to the digests), then the digests.

A worker looks for digests that are ``sending`` and have something due (a pending row, or a
row whose sender stopped: :func:`newsletter.store.outbox.has_due_work`) and runs the
delivery engine on each (:func:`newsletter.app.send.deliver_digest`), every
``[workers] poll_seconds`` when idle, until ``stop`` is set (SIGTERM, Ctrl-C: the messages in
flight are finished and recorded first). Pending retries are left for a later round rather
than waited for, so one digest's retries never hold up another digest.

On PostgreSQL any number of workers, ``send-now`` and ``run`` processes deliver the same
digest at once (claims with ``SKIP LOCKED``, leases, shares of the SMTP limits through
:mod:`newsletter.app.senders`). On SQLite a worker delivers under the send lock like any
sender: while another holds it, the worker says so once and waits.

A digest paused by too many failures in a row is resumed after it stayed paused for
``[workers] resume_paused_after_seconds``. With ``once``, the worker resumes the paused
digests first, delivers everything pending (waiting for retries like ``send-now``), and
returns when nothing is pending; a digest that pauses again then raises ``DeliveryPaused``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from newsletter.app.confirmations import deliver_confirmations, work_due
from newsletter.app.context import Context
from newsletter.app.send import deliver_digest, dkim_signer
from newsletter.app.send_lock import SendLock, send_lock
from newsletter.app.senders import (
    SETTLE_POLL_SECONDS,
    WORKER,
    SenderPresence,
    sender_presence,
    senders_share_digests,
)
from newsletter.delivery.report import SendReport
from newsletter.errors import DeliveryPaused, NewsletterError, SendInProgress
from newsletter.store import digests as digest_rows
from newsletter.store import outbox

log = logging.getLogger(__name__)


@dataclass
class WorkerSummary:
    """What a worker did until it stopped."""

    digests: set[int] = field(default_factory=set)
    sent: int = 0
    failed: int = 0
    retried: int = 0
    taken_over: int = 0  # rows other senders left in flight (possible duplicates)
    paused: dict[int, str] = field(default_factory=dict)  # digest -> why, last pause
    confirmations: int = 0  # confirmation emails sent
    seconds: float = 0.0

    def add(self, report: SendReport) -> None:
        self.digests.add(report.digest_id)
        self.sent += report.sent
        self.failed += report.failed
        self.retried += report.retried
        self.taken_over += report.released_in_flight
        if report.paused_reason:
            self.paused[report.digest_id] = report.paused_reason

    def describe(self) -> str:
        """One line: ``worker stopped: 2 digests, 4000 sent, 3 failed, 0 to retry in 12.3 s``."""
        plural = "" if len(self.digests) == 1 else "s"
        line = (
            f"worker stopped: {len(self.digests)} digest{plural}, {self.sent} sent, "
            f"{self.failed} failed, {self.retried} to retry in {self.seconds:.1f} s"
        )
        if self.confirmations:
            line += f"; {self.confirmations} confirmation emails sent"
        if self.taken_over:
            line += f"; {self.taken_over} taken over from senders that stopped"
        return line


class PauseWatch:
    """When this worker first saw each digest paused, to resume it after a while."""

    def __init__(self, after_seconds: float) -> None:
        self.after = after_seconds
        self._seen: dict[int, float] = {}

    def ready(self, digest_id: int) -> bool:
        """True once the digest has been paused for ``after_seconds`` (as seen from here)."""
        first = self._seen.setdefault(digest_id, time.monotonic())
        if time.monotonic() - first < self.after:
            return False
        del self._seen[digest_id]
        return True


def run_worker(ctx: Context, *, stop: threading.Event, once: bool = False) -> WorkerSummary:
    """Deliver unfinished digests until ``stop`` (or, with ``once``, until nothing is
    pending); see the module docstring."""
    dkim_signer(ctx)  # what would stop every send stops the worker at once, with one line
    ctx.check_link_settings()
    summary = WorkerSummary()
    started = time.monotonic()
    settings = ctx.settings.workers
    pauses = PauseWatch(settings.resume_paused_after_seconds)
    left_paused: set[int] = set()  # with ``once``: paused during this run, not resumed again
    with sender_presence(ctx, WORKER) as presence:
        log.info(
            "worker %s started on %s (%s)",
            presence.owner,
            ctx.store.where,
            "shares digests with the other senders"
            if senders_share_digests(ctx)
            else "SQLite: one sender at a time, under the send lock",
        )
        if once:
            _resume_paused(ctx)
        waiting = _Waiting()
        while not stop.is_set():
            _confirmations(ctx, stop, presence, summary)
            todo = _digests_to_work_on(ctx, once=once, pauses=pauses, skip=left_paused)
            share = presence.beat()
            if todo and (share is None or share.connections > 0):
                try:
                    with _lock_unless_shared(ctx) as lock:
                        waiting.over()
                        _work(ctx, todo, lock, presence, stop, once, summary)
                except SendInProgress as exc:
                    waiting.log(f"waiting: {exc}")
                else:
                    left_paused |= set(summary.paused) if once else set()
                    continue
            elif once and not todo:
                break
            elif todo:  # work, but no connection of ours yet (joining, or more workers than
                # connections): look again soon rather than after a whole poll
                _idle(stop, presence, min(settings.poll_seconds, SETTLE_POLL_SECONDS))
                continue
            _idle(stop, presence, settings.poll_seconds)
    summary.seconds = time.monotonic() - started
    log.info("%s", summary.describe())
    if once and summary.paused:
        digest_id, reason = next(iter(summary.paused.items()))
        raise DeliveryPaused(f"digest {digest_id}: {reason}")
    return summary


def _confirmations(
    ctx: Context, stop: threading.Event, presence: SenderPresence, summary: WorkerSummary
) -> None:
    """Deliver what the confirmation queue holds; a problem there is one log line, and the
    digests go out regardless."""
    try:
        if work_due(ctx):
            run = deliver_confirmations(ctx, stop=stop, presence=presence)
            summary.confirmations += run.sent if run is not None else 0
    except NewsletterError as exc:
        log.warning("confirmation emails not sent now: %s", exc)


def _work(
    ctx: Context,
    todo: list[int],
    lock: SendLock | None,
    presence: SenderPresence,
    stop: threading.Event,
    once: bool,
    summary: WorkerSummary,
) -> None:
    for digest_id in todo:
        if stop.is_set():
            return
        report = deliver_digest(
            ctx, digest_id, lock=lock, stop=stop, presence=presence, wait_for_retries=once
        )
        summary.add(report)


def _digests_to_work_on(
    ctx: Context, *, once: bool, pauses: PauseWatch, skip: set[int]
) -> list[int]:
    """Unfinished digests with something to do now, oldest first; paused ones that waited
    long enough are resumed on the way. With ``once``, a digest with rows pending later
    counts too (the engine waits for them)."""
    now = ctx.clock()
    todo: list[int] = []
    with ctx.store.atomic() as conn:
        for digest_id in digest_rows.unfinished_digest_ids(conn):
            if digest_id in skip:
                continue
            if not outbox.digest_is_sending(conn, digest_id):  # paused
                if once or not pauses.ready(digest_id):
                    continue
                if digest_rows.resume_paused(conn, digest_id, now=now):
                    log.info("digest %s: resuming it after its pause", digest_id)
            if outbox.has_due_work(conn, digest_id, now=now):
                todo.append(digest_id)
                continue
            counts = outbox.counts(conn, digest_id)
            settled = not counts.get("pending") and not counts.get("sending")
            if settled or (once and counts.get("pending")):  # settled: its state is decided
                todo.append(digest_id)
    return todo


def _resume_paused(ctx: Context) -> None:
    """Set every paused digest sending again."""
    with ctx.store.atomic() as conn:
        for digest_id in digest_rows.unfinished_digest_ids(conn):
            digest_rows.resume_paused(conn, digest_id, now=ctx.clock())


@contextmanager
def _lock_unless_shared(ctx: Context) -> Iterator[SendLock | None]:
    """The send lock where one sender at a time delivers (SQLite); nothing where several
    share the digests. ``SendInProgress`` if another sender holds it."""
    if senders_share_digests(ctx):
        yield None
        return
    with send_lock(ctx) as lock:
        yield lock


def _idle(stop: threading.Event, presence: SenderPresence, seconds: float) -> None:
    """Wait ``seconds`` (or until stopped), keeping this sender's heartbeat fresh."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, presence.every)):
            return
        presence.beat()


class _Waiting:
    """Says once that the worker waits for the send lock, and once that the wait is over."""

    def __init__(self) -> None:
        self.since: float | None = None

    def log(self, message: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.info("%s", message)

    def over(self) -> None:
        if self.since is not None:
            log.info("the send lock is free again after %.0f s", time.monotonic() - self.since)
            self.since = None
