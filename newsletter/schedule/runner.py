"""Running slots: decide which slot is due, have it claimed and sent, plan a retry.

The database protocol (claim, send, record) is :mod:`newsletter.app.slots`; this module adds
the timing: which fire time is due now, and when a failed one may be tried again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from newsletter import app
from newsletter.app import slots
from newsletter.app.slots import SlotResult
from newsletter.logs import LogProgress
from newsletter.schedule.timing import Schedule, SlotDecision, retry_at

log = logging.getLogger(__name__)

RETRY_DELAY = timedelta(minutes=5)


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
        self.owner = owner or slots.this_process()
        self._lock = threading.Lock()

    def decide(self) -> SlotDecision:
        """Which slot is due now, from the newest slot done in the database."""
        return self.schedule.due(self.ctx.clock(), slots.last_done_slot(self.ctx))

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
        if decision.fire_time is None or decision.slot is None:
            log.info("%s", decision.reason)
            return None
        holder = slots.claim_slot(self.ctx, decision.slot, self.owner)
        if holder is not None:
            log.info("slot %s: not running it here: %s", decision.slot, holder)
            return None
        log.info("%s", decision.reason)
        result = slots.send_slot(
            self.ctx, decision.slot, self.owner, stop=self.stop, progress=LogProgress()
        )
        if not result.done:
            self._plan_retry(decision.slot, decision.fire_time)
        return result

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
