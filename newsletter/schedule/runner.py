"""Running slots: claim the due slot in the database, send it, record the outcome.

Every decision comes from the database (``slot_runs``), never from the scheduler's memory:
two ``newsletter run`` processes, or a run and a manual ``send-now``, can share one database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import cached_property

from newsletter import app
from newsletter.config import ScheduleSettings
from newsletter.errors import NewsletterError, SendInProgress
from newsletter.logs import LogProgress
from newsletter.schedule.timing import (
    DigestTrigger,
    SlotDecision,
    build_trigger,
    due_slot,
    next_fires,
    retry_at,
    zone_of,
)
from newsletter.store import slots
from newsletter.store.locks import process_owner

log = logging.getLogger(__name__)

RETRY_DELAY = timedelta(minutes=5)


@dataclass(frozen=True)
class Schedule:
    """``[schedule]`` validated: the cron expression, its zone and the grace period."""

    cron: str
    zone: tzinfo
    grace: timedelta

    @classmethod
    def from_settings(cls, settings: ScheduleSettings) -> Schedule:
        schedule = cls(
            settings.cron, zone_of(settings.timezone), timedelta(minutes=settings.grace_minutes)
        )
        _ = schedule.trigger  # a bad cron fails here, before anything starts
        return schedule

    @cached_property
    def trigger(self) -> DigestTrigger:
        return build_trigger(self.cron, self.zone)

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        return next_fires(self.trigger, after, count)

    def due(self, now: datetime, last_done_slot: str | None) -> SlotDecision:
        return due_slot(now, last_done_slot, self.cron, self.zone, self.grace)


@dataclass(frozen=True)
class SlotResult:
    """What one attempt at a slot did: the outcome recorded, and whether it may be retried."""

    slot: str
    outcome: str
    done: bool


class SlotRunner:
    """Runs whichever slot is due, one at a time; called at start and at every fire time."""

    def __init__(
        self,
        ctx: app.Context,
        schedule: Schedule,
        *,
        stop: threading.Event | None = None,
        on_retry: Callable[[datetime], None] | None = None,
        retry_delay: timedelta = RETRY_DELAY,
        owner: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.schedule = schedule
        self.stop = stop or threading.Event()
        self.on_retry = on_retry
        self.retry_delay = retry_delay
        self.owner = owner or process_owner()
        self._lock = threading.Lock()

    def decide(self) -> SlotDecision:
        with self.ctx.store.atomic() as conn:
            last_done = slots.last_done_slot(conn)
        return self.schedule.due(self.ctx.clock(), last_done)

    def run_due(self) -> SlotResult | None:
        """Run the due slot if there is one and nobody else has it; never raises."""
        with self._lock:
            if self.stop.is_set():
                return None
            try:
                return self._run_due()
            except Exception:  # the scheduler must survive anything one run does
                log.exception("scheduled run failed unexpectedly; the next slot runs as usual")
                return None
            finally:
                self._log_next()

    def _run_due(self) -> SlotResult | None:
        decision = self.decide()
        if decision.fire_time is None:
            log.info("%s", decision.reason)
            return None
        slot = decision.slot
        assert slot is not None
        with self.ctx.store.atomic() as conn:
            holder = slots.claim(conn, slot, self.owner, now=self.ctx.clock())
        if holder is not None:
            log.info("slot %s: not running it here: %s", slot, holder)
            return None
        log.info("%s", decision.reason)
        result = self._send(slot)
        with self.ctx.store.atomic() as conn:
            slots.finish(
                conn,
                slot,
                self.owner,
                outcome=result.outcome,
                done=result.done,
                now=self.ctx.clock(),
            )
        if not result.done:
            assert decision.fire_time is not None
            self._plan_retry(slot, decision.fire_time)
        return result

    def _send(self, slot: str) -> SlotResult:
        try:
            summary = app.send_now(self.ctx, slot=slot, stop=self.stop, progress=LogProgress())
        except SendInProgress as exc:
            log.info("slot %s: another process is sending, so this run stands aside: %s", slot, exc)
            return SlotResult(slot, f"busy: {exc}", done=False)
        except NewsletterError as exc:
            cause = f" (caused by {exc.__cause__!r})" if exc.__cause__ else ""
            log.error("slot %s failed: %s%s", slot, exc, cause)
            return SlotResult(slot, f"failed: {exc}", done=False)
        except Exception as exc:
            log.exception("slot %s failed unexpectedly", slot)
            return SlotResult(slot, f"failed: {type(exc).__name__}: {exc}", done=False)
        return _summarize(slot, summary)

    def _plan_retry(self, slot: str, fire_time: datetime) -> None:
        if self.stop.is_set():
            log.info("slot %s: stopped; a run within the grace period picks it up again", slot)
            return
        if self.on_retry is None:  # the caller plans retries itself (or not at all)
            return
        now = self.ctx.clock()
        upcoming = self.schedule.next_fires(now, 1)
        at = retry_at(
            now,
            fire_time,
            upcoming[0] if upcoming else None,
            self.schedule.grace,
            self.retry_delay,
        )
        if at is None:
            log.warning(
                "slot %s: not retried (grace period over or next slot too close); "
                "unsent articles go out with the next slot",
                slot,
            )
            return
        log.info("slot %s: retrying at %s", slot, at.astimezone(self.schedule.zone))
        self.on_retry(at)

    def _log_next(self) -> None:
        upcoming = self.schedule.next_fires(self.ctx.clock(), 1)
        if upcoming:
            log.info("next slot at %s", upcoming[0].strftime("%Y-%m-%d %H:%M:%S %Z"))


def _summarize(slot: str, summary: app.SendSummary) -> SlotResult:
    parts = [
        f"resumed digest {r.digest_id}: {r.sent} sent, {r.failed} failed" for r in summary.resumed
    ]
    if summary.report is not None:
        report = summary.report
        parts.append(
            f"sent digest {summary.digest_id} ({summary.articles} articles): "
            f"{report.sent} sent, {report.failed} failed"
        )
    else:
        parts.append(f"no new digest: {summary.skipped_reason or 'no new articles'}")
    outcome = "; ".join(parts)
    unfinished = summary.interrupted or any(not r.finished for r in summary.all_reports())
    if unfinished:
        outcome = f"interrupted: {outcome} (the digest resumes with the next run)"
    log.info("slot %s: %s", slot, outcome)
    return SlotResult(slot, outcome, done=not unfinished)
