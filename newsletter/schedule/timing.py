"""When digests are due: cron parsing, fire times, slot keys and the missed-slot decision.

Pure functions of their arguments (the clock is always passed in), so every rule here is
tested without waiting for 07:00.

A *slot* is one scheduled fire time; its key is the fire time in UTC, ISO 8601
(``2026-11-26T07:00:00+00:00``), so keys sort as strings and never depend on the zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from newsletter.config import ScheduleSettings
from newsletter.errors import ConfigError

# A slot is still sent this late even with ``grace_minutes = 0``: the scheduler's own wake-up
# latency must never turn an on-time run into a "missed" one.
ON_TIME = timedelta(minutes=1)
# How many missed fire times are counted for the log line (an every-second cron down for a
# week would otherwise mean a long walk for a number nobody needs exactly).
COUNT_LIMIT = 1000

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_PLAIN_LIST = re.compile(r"^\d+(,\d+)*$")
_DOW_ITEM = re.compile(r"^(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\d+))?$")


class DigestTrigger(CronTrigger):
    """A ``CronTrigger`` that fires a fixed wall-clock time once when clocks fall back.

    On a fall-back day a local time such as 02:30 happens twice. Like cron(8), Quartz and
    Cronos, a *fixed-time* schedule (plain numbers in the second, minute and hour fields)
    fires at the first occurrence only; an *interval* schedule (``*``, ranges or steps in
    those fields) fires through both passes. A time skipped by spring-forward fires right
    after the jump (APScheduler's own behaviour: ``30 2 * * *`` runs at 03:30).
    """

    __slots__ = ("fixed_time",)

    def __init__(self, *, fixed_time: bool, **fields: object) -> None:
        super().__init__(**fields)
        self.fixed_time = fixed_time

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire_time = super().get_next_fire_time(previous_fire_time, now)
        while fire_time is not None and self.fixed_time and _second_pass(fire_time):
            fire_time = super().get_next_fire_time(fire_time, fire_time)
        return fire_time


def _second_pass(moment: datetime) -> bool:
    """True for the second occurrence of a wall-clock time repeated by a fall-back."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


def zone_of(name: str | tzinfo) -> tzinfo:
    return ZoneInfo(name) if isinstance(name, str) else name


def build_trigger(cron: str, zone: str | tzinfo) -> DigestTrigger:
    """The trigger for ``[schedule] cron`` in ``zone``, or a ``ConfigError`` naming the value.

    Five fields (minute hour day month weekday, as in crontab: 0 and 7 are Sunday), six with
    a seconds field first, or a macro such as ``@daily``. Weekday numbers are translated to
    APScheduler's names, since APScheduler 3.x counts 0 as Monday.
    """
    expr = MACROS.get(cron.strip().lower(), cron)
    fields = expr.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise _cron_error(cron, f"expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second, minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise _cron_error(
            cron,
            "restrict the day of the month or the weekday, not both (crontab would run on "
            "either, APScheduler only when both match)",
        )
    try:
        trigger = DigestTrigger(
            fixed_time=all(_PLAIN_LIST.match(f) for f in (second, minute, hour)),
            second=second,
            minute=minute,
            hour=hour,
            day="*" if day == "?" else day,
            month=month,
            day_of_week=_weekdays(weekday),
            timezone=zone_of(zone),
        )
    except ValueError as exc:
        raise _cron_error(cron, str(exc)) from None
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise _cron_error(cron, "it never fires")
    return trigger


def _cron_error(cron: str, why: str) -> ConfigError:
    return ConfigError(
        f"[schedule] cron: {cron!r} is not a usable schedule: {why} "
        '(e.g. "0 7 * * *" for 07:00 every day, "0 7 * * 1-5" for weekdays)'
    )


def _weekdays(field: str) -> str:
    """A crontab weekday field (0-7, Sunday = 0 or 7, or names) as APScheduler weekday names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if match is None:
            raise ValueError(f"unrecognized weekday expression {item!r}")
        start_text, end_text, step_text = match.group("start", "end", "step")
        if start_text == "*":
            if end_text is not None:
                raise ValueError(f"unrecognized weekday expression {item!r}")
            start, end = 0, 6
        else:
            start = _weekday_number(start_text)
            end = _weekday_number(end_text) if end_text else (6 if step_text else start)
        if end_text and end == 0 and start > 0:
            end = 7  # "5-7" and "fri-sun" end on Sunday
        if start > end:
            raise ValueError(f"weekday range {item!r} runs backwards")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"weekday step in {item!r} must be at least 1")
        days.update(day % 7 for day in range(start, end + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(CRON_DAYS[day] for day in sorted(days))


def _weekday_number(text: str) -> int:
    if text.isascii() and text.isdigit() and int(text) <= 7:
        return int(text)
    if text in CRON_DAYS:
        return CRON_DAYS.index(text)
    raise ValueError(f"unknown weekday {text!r} (use 0-7 or sun-sat)")


def _normalized(moment: datetime, zone: tzinfo) -> datetime:
    """A real instant shown in the zone (APScheduler may return 02:30+01:00 inside a gap)."""
    return moment.astimezone(UTC).astimezone(zone)


def next_fires(trigger: CronTrigger, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, in the trigger's zone."""
    found: list[datetime] = []
    previous: datetime | None = None
    now = after.astimezone(UTC) + timedelta(microseconds=1)
    while len(found) < count:
        fire_time = trigger.get_next_fire_time(previous, now)
        if fire_time is None:
            break
        found.append(_normalized(fire_time, trigger.timezone))
        previous = now = fire_time
    return found


def fire_times(cron: str, zone: str | tzinfo, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times of ``cron`` in ``zone`` strictly after ``after``."""
    return next_fires(build_trigger(cron, zone), after, count)


def latest_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The most recent fire time at or before ``now`` (None if there was none in 10 years)."""
    # Compared in UTC: two datetimes in one zone compare by wall clock and ignore ``fold``.
    now = now.astimezone(UTC)
    for span in (
        timedelta(minutes=1),
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=8),
        timedelta(days=32),
        timedelta(days=367),
        timedelta(days=3653),
    ):
        fires = next_fires(trigger, now - span, 1)
        if not fires or fires[0].astimezone(UTC) > now:
            continue
        latest = fires[0].astimezone(UTC)
        while True:
            following = next_fires(trigger, latest, 1)
            if not following or following[0].astimezone(UTC) > now:
                return latest
            latest = following[0].astimezone(UTC)
    return None


def slot_key(fire_time: datetime) -> str:
    """``2026-11-26T07:00:00+00:00``: the fire time in UTC, so keys sort as strings."""
    if fire_time.tzinfo is None:
        raise ValueError("slot_key needs an aware datetime")
    return fire_time.astimezone(UTC).isoformat(timespec="seconds")


def parse_slot(key: str) -> datetime:
    return datetime.fromisoformat(key).astimezone(UTC)


@dataclass(frozen=True)
class SlotDecision:
    """Which slot to run now, if any, and why (one line for the log)."""

    fire_time: datetime | None  # the slot to run now; None: nothing to run
    reason: str
    missed: int = 0  # fire times since the last done slot that nobody ran (capped)
    latest: datetime | None = None  # the most recent fire time at or before now

    @property
    def slot(self) -> str | None:
        return slot_key(self.fire_time) if self.fire_time else None


def due_slot(
    now: datetime,
    last_done_slot: str | None,
    trigger: DigestTrigger,
    grace: timedelta,
) -> SlotDecision:
    """The slot to run at ``now`` given the newest slot already done.

    The most recent fire time is run if it is not done and at most ``grace`` (at least
    :data:`ON_TIME`) old; older missed fire times are coalesced into it, since one digest
    carries every article no earlier digest carried. If the most recent fire time is older
    than the grace period, every missed slot is skipped and the next fire time takes over.
    With no slot done yet (a new database) only the most recent fire time is considered.
    """
    # Arithmetic in UTC: datetimes sharing one zone compare and subtract by wall clock,
    # ignoring ``fold``, which is wrong inside a repeated fall-back hour.
    now = now.astimezone(UTC)
    latest = latest_fire(trigger, now)
    done = parse_slot(last_done_slot) if last_done_slot else None
    if latest is None:
        return SlotDecision(None, "no scheduled time has passed yet")
    local = _normalized(latest, trigger.timezone)
    named = f"{slot_key(latest)} ({local:%Y-%m-%d %H:%M:%S %Z})"
    if done is not None and latest <= done:
        return SlotDecision(None, f"slot {named} is already done", 0, local)
    missed = 1 if done is None else _count_between(trigger, done, latest)
    window = max(grace, ON_TIME)
    late = now - latest
    if late <= window:
        if late <= ON_TIME:
            reason = f"slot {named} is due"
        else:
            reason = (
                f"slot {named} was missed {_duration(late)} ago, within the grace period of "
                f"{_duration(window)}: sending it now"
            )
        if done is not None and missed > 1:
            reason += (
                f"; {_plural(missed - 1, 'older missed slot')} since {slot_key(done)} "
                "coalesced into it"
            )
        return SlotDecision(local, reason, missed, local)
    beyond = f"is {_duration(late)} old, beyond the grace period of {_duration(window)}"
    if done is None:
        reason = f"no slot has run on this database yet, and the latest, {named}, {beyond}"
    else:
        reason = (
            f"skipped {_plural(missed, 'missed slot')} since {slot_key(done)}: the latest, "
            f"{named}, {beyond}; their articles go out with the next slot"
        )
    return SlotDecision(None, reason, missed, local)


@dataclass(frozen=True)
class Schedule:
    """``[schedule]`` validated: the cron expression, its zone, the grace period, and the
    trigger built from them once (a bad cron fails when the schedule is made)."""

    cron: str
    zone: tzinfo
    grace: timedelta
    trigger: DigestTrigger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", build_trigger(self.cron, self.zone))

    @classmethod
    def from_settings(cls, settings: ScheduleSettings) -> Schedule:
        return cls(
            settings.cron, zone_of(settings.timezone), timedelta(minutes=settings.grace_minutes)
        )

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after``, in the schedule's zone."""
        return next_fires(self.trigger, after, count)

    def due(self, now: datetime, last_done_slot: str | None) -> SlotDecision:
        """The slot to run at ``now`` given the newest slot done (see :func:`due_slot`)."""
        return due_slot(now, last_done_slot, self.trigger, self.grace)


def retry_at(
    now: datetime,
    fire_time: datetime,
    next_fire: datetime | None,
    grace: timedelta,
    delay: timedelta,
) -> datetime | None:
    """When to retry a failed slot: after ``delay``, if still within grace and before the next."""
    at = now.astimezone(UTC) + delay
    if at - fire_time.astimezone(UTC) > max(grace, ON_TIME):
        return None
    if next_fire is not None and at >= next_fire.astimezone(UTC):
        return None
    return at


def _count_between(trigger: CronTrigger, after: datetime, until: datetime) -> int:
    """How many fire times fall in (after, until], counting up to :data:`COUNT_LIMIT`."""
    count = 0
    cursor = after
    while count < COUNT_LIMIT:
        fires = next_fires(trigger, cursor, 1)
        if not fires or fires[0].astimezone(UTC) > until.astimezone(UTC):
            break
        count += 1
        cursor = fires[0]
    return max(count, 1)


def _plural(count: int, noun: str) -> str:
    more = "+" if count >= COUNT_LIMIT else ""
    return f"{count}{more} {noun}{'' if count == 1 else 's'}"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
