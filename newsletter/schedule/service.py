"""``newsletter run``: an APScheduler 3.x scheduler that calls the slot runner on the cron.

Jobs live in APScheduler's default in-memory job store and are rebuilt at every start: which
slots were missed is decided from our own ``slot_runs`` table, never from a persistent job
store (which, with ``replace_existing=True``, recomputes the next run from *now* on restart
and silently drops a run missed while the process was down).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter import app
from newsletter.schedule.bounce_checks import BounceChecker
from newsletter.schedule.runner import RETRY_DELAY, SlotRunner
from newsletter.schedule.timing import Schedule

log = logging.getLogger(__name__)

DIGEST_JOB = "digest"
START_JOB = "missed-slot-check"
RETRY_JOB = "retry"
BOUNCES_JOB = "bounces"


class DigestService:
    """The scheduler and its jobs: the cron job, a check at start, retries of a failed slot,
    and, with ``[bounces] mailbox`` set, a bounce mailbox check at start and every
    ``[bounces] check_minutes``."""

    def __init__(
        self,
        ctx: app.Context,
        schedule: Schedule,
        *,
        stop: threading.Event,
        retry_delay: timedelta = RETRY_DELAY,
    ) -> None:
        self.schedule = schedule
        self.scheduler = BackgroundScheduler(
            timezone=schedule.zone,
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={
                "coalesce": True,
                # Run however late: the runner decides from the database whether the slot
                # is still within the grace period, and logs what it skipped.
                "misfire_grace_time": None,
            },
        )
        self.runner = SlotRunner(
            ctx, schedule, stop=stop, on_retry=self._retry_at, retry_delay=retry_delay
        )
        self.bounces = BounceChecker(ctx, stop=stop) if ctx.settings.bounces.mailbox else None

    def start(self, *, paused: bool = False) -> datetime | None:
        """Start the scheduler; returns the next fire time of the digest job."""
        self.scheduler.add_job(
            self.runner.run_due,
            # Always the configured zone: a CronTrigger built without one uses the host's zone.
            trigger=self.schedule.trigger,
            id=DIGEST_JOB,
            name="daily digest",
            # One running and one waiting on the runner's lock, so a fire during a long send
            # is not dropped; the waiting one coalesces whatever became due meanwhile.
            max_instances=2,
        )
        self.scheduler.add_job(
            self.runner.run_due,
            trigger=DateTrigger(timezone=self.schedule.zone),  # once, now
            id=START_JOB,
            name="missed-slot check at start",
        )
        if self.bounces is not None:
            self.scheduler.add_job(
                self.bounces.run,
                # From now on, every check_minutes: the first check at start.
                trigger=IntervalTrigger(minutes=self.bounces.minutes, timezone=self.schedule.zone),
                next_run_time=datetime.now(self.schedule.zone),
                id=BOUNCES_JOB,
                name="bounce mailbox check",
                max_instances=1,
            )
        self.scheduler.start(paused=paused)
        job = self.scheduler.get_job(DIGEST_JOB)
        return job.next_run_time if job else None

    def shutdown(self) -> None:
        """Stop firing and wait for a run in progress (its send stops after in-flight mail)."""
        self.scheduler.shutdown(wait=True)

    def _retry_at(self, at: datetime) -> None:
        self.scheduler.add_job(
            self.runner.run_due,
            trigger=DateTrigger(run_date=at, timezone=self.schedule.zone),
            id=RETRY_JOB,
            name="retry of a failed slot",
            replace_existing=True,
        )


def run_until_stopped(
    ctx: app.Context,
    schedule: Schedule,
    *,
    stop: threading.Event,
    retry_delay: timedelta = RETRY_DELAY,
) -> None:
    """Send each slot's digest on the schedule until ``stop`` is set (SIGTERM, Ctrl-C)."""
    service = DigestService(ctx, schedule, stop=stop, retry_delay=retry_delay)
    next_run = service.start()
    log.info(
        "scheduler started: %r in %s, grace period %s min; next slot at %s%s%s",
        schedule.cron,
        schedule.zone,
        int(schedule.grace.total_seconds() // 60),
        next_run.strftime("%Y-%m-%d %H:%M:%S %Z") if next_run else "never",
        f"; bounce mailbox checked every {service.bounces.minutes} min" if service.bounces else "",
        "; digests are queued for `newsletter worker` ([schedule] deliver)"
        if ctx.settings.schedule.deliver == "workers"
        else "",
    )
    try:
        while not stop.wait(timeout=60):
            pass
    except KeyboardInterrupt:  # a second signal: do not wait for the run in progress
        service.scheduler.shutdown(wait=False)
        raise
    log.info("stopping (a send in progress first finishes the messages in flight)")
    service.shutdown()
    log.info("scheduler stopped")
