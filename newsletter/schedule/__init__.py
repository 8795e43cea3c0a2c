"""The scheduled daily digest: when slots are due, who runs them, and the scheduler process.

- :mod:`~newsletter.schedule.timing`: pure functions (cron, fire times, slot keys, the
  missed-slot decision) and the validated :class:`Schedule`, clock passed in;
- :mod:`~newsletter.schedule.runner`: runs the due slot once (claimed in the database
  through :mod:`newsletter.app.slots`) and plans retries;
- :mod:`~newsletter.schedule.bounce_checks`: the bounce mailbox check ``run`` makes every
  ``[bounces] check_minutes``;
- :mod:`~newsletter.schedule.service`: the APScheduler 3.x process behind ``newsletter run``.
"""

from newsletter.schedule.runner import SlotRunner
from newsletter.schedule.service import DigestService, run_until_stopped
from newsletter.schedule.timing import (
    Schedule,
    SlotDecision,
    build_trigger,
    due_slot,
    fire_times,
    slot_key,
)

__all__ = [
    "DigestService",
    "Schedule",
    "SlotDecision",
    "SlotRunner",
    "build_trigger",
    "due_slot",
    "fire_times",
    "run_until_stopped",
    "slot_key",
]
