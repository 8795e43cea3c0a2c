"""Scheduled slots: each fire time's digest sent once, whoever runs it.

Every decision comes from the database (``slot_runs``), never from a scheduler's memory: two
``newsletter run`` processes, or a run and a manual ``send-now``, can share one database.
A slot is claimed, its digest sent, and the outcome recorded; a failed attempt leaves the
slot open to a retry. When slots are due is :mod:`newsletter.schedule`'s business.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from newsletter.app.confirmations import resume_confirmations
from newsletter.app.context import Context
from newsletter.app.send import SendSummary, send_now
from newsletter.delivery.report import Progress
from newsletter.errors import NewsletterError, SendInProgress
from newsletter.store import slots as slot_rows
from newsletter.store.locks import process_owner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotResult:
    """What one attempt at a slot did: the outcome recorded, and whether it may be retried."""

    slot: str
    outcome: str
    done: bool


def this_process() -> str:
    """The owner name this process claims slots under (``host:pid``)."""
    return process_owner()


def last_done_slot(ctx: Context) -> str | None:
    """The newest slot whose digest is done (slot keys sort as UTC timestamps)."""
    with ctx.store.atomic() as conn:
        return slot_rows.last_done_slot(conn)


def recent_slots(ctx: Context, *, limit: int) -> list[slot_rows.SlotRun]:
    """The newest slots run or being run, newest first."""
    with ctx.store.atomic() as conn:
        return slot_rows.recent(conn, limit=limit)


def claim_slot(ctx: Context, slot: str, owner: str) -> str | None:
    """Take the slot for ``owner``: None when it is ours now, else why it is not ours to run."""
    with ctx.store.atomic() as conn:
        return slot_rows.claim(conn, slot, owner, now=ctx.clock())


def send_slot(
    ctx: Context,
    slot: str,
    owner: str,
    *,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> SlotResult:
    """Send the digest of a slot claimed by ``owner`` and record the outcome; never raises
    for a failed send (the outcome says why, and the slot stays open to a retry)."""
    result = _send(ctx, slot, stop=stop, progress=progress)
    with ctx.store.atomic() as conn:
        slot_rows.finish(
            conn, slot, owner, outcome=result.outcome, done=result.done, now=ctx.clock()
        )
    return result


def _send(
    ctx: Context, slot: str, *, stop: threading.Event | None, progress: Progress | None
) -> SlotResult:
    resume_confirmations(ctx, stop=stop)  # never raises: the digest goes out regardless
    queue = ctx.settings.schedule.deliver == "workers"  # the workers deliver it
    try:
        summary = send_now(ctx, slot=slot, stop=stop, progress=progress, queue=queue)
    except SendInProgress as exc:
        log.info("slot %s: another process is sending, so this run stands aside: %s", slot, exc)
        return SlotResult(slot, f"busy: {exc}", done=False)
    except NewsletterError as exc:
        # The message is one line for people; the log keeps what caused it (an error raised
        # ``from None`` hides its cause on purpose: a secret may be in it).
        cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        log.error("slot %s failed: %s%s", slot, exc, f" (caused by {cause!r})" if cause else "")
        return SlotResult(slot, f"failed: {exc}", done=False)
    except Exception as exc:
        log.exception("slot %s failed unexpectedly", slot)
        return SlotResult(slot, f"failed: {type(exc).__name__}: {exc}", done=False)
    return _summarize(slot, summary)


def _summarize(slot: str, summary: SendSummary) -> SlotResult:
    parts = [
        f"resumed digest {r.digest_id}: {r.sent} sent, {r.failed} failed" for r in summary.resumed
    ]
    parts += [f"left digest {i} to the workers" for i in summary.left_to_workers]
    if summary.queued is not None:
        parts.append(
            f"queued digest {summary.digest_id} ({summary.articles} articles) for "
            f"{summary.queued} subscribers; the workers deliver it"
        )
    elif summary.report is not None:
        report = summary.report
        verb = "digest {} reached nobody" if report.digest_failed else "sent digest {}"
        parts.append(
            f"{verb.format(summary.digest_id)} ({summary.articles} articles): "
            f"{report.sent} sent, {report.failed} failed"
            + ("; its articles go out with the next digest" if report.digest_failed else "")
        )
    else:
        parts.append(f"no new digest: {summary.skipped_reason or 'no new articles'}")
    outcome = "; ".join(parts)
    unfinished = summary.interrupted or any(not r.finished for r in summary.all_reports())
    if unfinished:
        outcome = f"interrupted: {outcome} (the digest resumes with the next run)"
    log.info("slot %s: %s", slot, outcome)
    return SlotResult(slot, outcome, done=not unfinished)
