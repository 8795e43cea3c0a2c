"""The scheduled digest: cron and zones, DST, the missed-slot policy, slot claims and runs.

Everything here runs on an injected clock; nothing sleeps until 07:00. The real process
(``newsletter run`` in a subprocess) is in test_run_process.py.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from newsletter import app
from newsletter.app import Context
from newsletter.app.digest import next_digest
from newsletter.cli import cli
from newsletter.cli.base import run_guarded
from newsletter.errors import ConfigError, SendInProgress
from newsletter.inbox import free_port
from newsletter.schedule import (
    DigestService,
    Schedule,
    SlotRunner,
    build_trigger,
    due_slot,
    fire_times,
    run_until_stopped,
    slot_key,
)
from newsletter.schedule.service import DIGEST_JOB
from newsletter.schedule.timing import ON_TIME, latest_fire, retry_at
from newsletter.store import digests as digest_rows
from newsletter.store import locks, slots
from newsletter.store.schema import digests
from newsletter.subscribers import add_subscriber
from tests.conftest import SEEDS, FrozenClock
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
DAY = timedelta(days=1)
SIX_HOURS = timedelta(hours=6)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_times(times: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M %Z") for t in times]


# -- cron expressions ---------------------------------------------------------------------


def test_five_field_cron_in_the_configured_zone_not_the_hosts():
    trigger = build_trigger("0 7 * * *", "Asia/Tokyo")
    assert trigger.timezone == ZoneInfo("Asia/Tokyo")
    [fire] = fire_times("0 7 * * *", "Asia/Tokyo", utc(2026, 11, 25, 12), 1)
    assert fire == datetime(2026, 11, 26, 7, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert slot_key(fire) == "2026-11-25T22:00:00+00:00"


def test_six_fields_put_seconds_first():
    times = fire_times("*/20 30 7 * * *", "UTC", utc(2026, 11, 26), 4)
    clock_times = [t.strftime("%H:%M:%S") for t in times]
    assert clock_times == ["07:30:00", "07:30:20", "07:30:40", "07:30:00"]
    assert times[3].day == 27


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]),  # crontab: 1 is Monday
        ("0", ["Sun", "Sun"]),
        ("7", ["Sun", "Sun"]),
        ("sat,sun", ["Sun", "Sat", "Sun"]),
        ("5-7", ["Sun", "Fri", "Sat", "Sun"]),
        ("fri-sun", ["Sun", "Fri", "Sat", "Sun"]),
        ("*/3", ["Sun", "Wed", "Sat", "Sun"]),  # 0, 3, 6
        ("0-6", ["Sun", "Mon", "Tue"]),
    ],
)
def test_weekday_numbers_mean_what_they_mean_in_crontab(weekday: str, expected: list[str]):
    # APScheduler 3.x counts 0 as Monday; the config speaks crontab, where 0 and 7 are Sunday.
    after = utc(2026, 11, 28, 12)  # a Saturday, after 07:00
    times = fire_times(f"0 7 * * {weekday}", "UTC", after, len(expected))
    assert [t.strftime("%a") for t in times] == expected


def test_macros():
    assert fire_times("@daily", "UTC", utc(2026, 11, 26, 7), 1) == [utc(2026, 11, 27)]
    assert fire_times("@hourly", "UTC", utc(2026, 11, 26, 7), 1) == [utc(2026, 11, 26, 8)]


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 7 * *", "expected 5 fields (or 6 with seconds first), got 4"),
        ("0 25 * * *", "higher than the maximum value (23)"),
        ("0 7 * * 8", "unknown weekday '8'"),
        ("0 7 * * \u00b9", "unknown weekday '\u00b9'"),  # a digit to isdigit(), not to int()
        ("0 7 * * 5-1", "runs backwards"),
        ("0 7 1 * 1", "restrict the day of the month or the weekday, not both"),
        ("0 0 31 2 *", "it never fires"),
        ("every day at 7", "expected 5 fields"),
    ],
)
def test_bad_cron_is_a_config_error_naming_the_key_and_value(cron: str, why: str):
    with pytest.raises(ConfigError) as caught:
        build_trigger(cron, "UTC")
    message = str(caught.value)
    assert message.startswith(f"[schedule] cron: {cron!r} is not a usable schedule: ")
    assert why in message


# -- slot keys ----------------------------------------------------------------------------


def test_slot_key_is_the_fire_time_in_utc():
    fire = datetime(2026, 11, 26, 8, tzinfo=BERLIN)
    assert slot_key(fire) == "2026-11-26T07:00:00+00:00"
    assert slot_key(fire.astimezone(UTC)) == slot_key(fire)
    with pytest.raises(ValueError):
        slot_key(datetime(2026, 11, 26, 7))


def test_slot_keys_sort_like_their_fire_times():
    times = fire_times("0 7,19 * * *", "Europe/Berlin", utc(2026, 3, 20), 40)  # across DST
    keys = [slot_key(t) for t in times]
    assert keys == sorted(keys) and len(set(keys)) == 40


# -- time zones and daylight saving -------------------------------------------------------


def test_seven_oclock_stays_seven_oclock_across_spring_forward():
    # Europe/Berlin springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST).
    times = fire_times("0 7 * * *", "Europe/Berlin", utc(2026, 3, 27), 4)
    assert local_times(times) == [
        "03-27 07:00 CET",
        "03-28 07:00 CET",
        "03-29 07:00 CEST",
        "03-30 07:00 CEST",
    ]
    assert [slot_key(t)[11:16] for t in times] == ["06:00", "06:00", "05:00", "05:00"]


def test_seven_oclock_stays_seven_oclock_across_fall_back():
    # Europe/Berlin falls back on 2026-10-25 (03:00 CEST -> 02:00 CET).
    times = fire_times("0 7 * * *", "Europe/Berlin", utc(2026, 10, 23), 4)
    assert local_times(times) == [
        "10-23 07:00 CEST",
        "10-24 07:00 CEST",
        "10-25 07:00 CET",
        "10-26 07:00 CET",
    ]
    assert [slot_key(t)[11:16] for t in times] == ["05:00", "05:00", "06:00", "06:00"]


def test_new_york_dst_dates_too():
    # America/New_York: spring forward 2026-03-08, fall back 2026-11-01.
    spring = fire_times("0 7 * * *", "America/New_York", utc(2026, 3, 7), 2)
    fall = fire_times("0 7 * * *", "America/New_York", utc(2026, 10, 31), 2)
    assert [t.hour for t in spring + fall] == [7, 7, 7, 7]
    assert [t.utcoffset() for t in spring + fall] == [
        timedelta(hours=-5),
        timedelta(hours=-4),
        timedelta(hours=-4),
        timedelta(hours=-5),
    ]


def test_a_time_skipped_by_spring_forward_fires_right_after_the_jump():
    times = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28), 3)
    assert local_times(times) == ["03-28 02:30 CET", "03-29 03:30 CEST", "03-30 02:30 CEST"]


def test_a_fixed_time_repeated_by_fall_back_fires_once():
    times = fire_times("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24), 3)
    assert local_times(times) == ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]


def test_an_interval_schedule_fires_through_both_passes_of_the_repeated_hour():
    times = fire_times("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 45), 6)
    assert local_times(times) == [
        "10-25 02:00 CEST",
        "10-25 02:30 CEST",
        "10-25 02:00 CET",
        "10-25 02:30 CET",
        "10-25 03:00 CET",
        "10-25 03:30 CET",
    ]
    keys = [slot_key(t) for t in times]  # compare as UTC: same-zone datetimes ignore fold
    assert keys == sorted(keys) and len(set(keys)) == 6


def test_latest_fire_looks_back_across_dst():
    trigger = build_trigger("0 7 * * *", "Europe/Berlin")
    assert latest_fire(trigger, utc(2026, 3, 29, 4, 59)) == utc(2026, 3, 28, 6)
    assert latest_fire(trigger, utc(2026, 3, 29, 5)) == utc(2026, 3, 29, 5)
    yearly = build_trigger("0 7 1 1 *", "UTC")
    assert latest_fire(yearly, utc(2026, 11, 26)) == utc(2026, 1, 1, 7)


# -- which slot to run: the missed-slot policy --------------------------------------------

SEVEN_UTC = build_trigger("0 7 * * *", "UTC")
SEVEN_BERLIN = build_trigger("0 7 * * *", "Europe/Berlin")


def test_on_time_slot_is_due():
    decision = due_slot(utc(2026, 11, 26, 7, 0, 1), None, SEVEN_UTC, SIX_HOURS)
    assert decision.slot == "2026-11-26T07:00:00+00:00"
    assert "is due" in decision.reason


def test_done_slot_is_not_run_again():
    decision = due_slot(utc(2026, 11, 26, 9), "2026-11-26T07:00:00+00:00", SEVEN_UTC, SIX_HOURS)
    assert decision.fire_time is None
    assert (
        decision.reason
        == "slot 2026-11-26T07:00:00+00:00 (2026-11-26 07:00:00 UTC) is already done"
    )


def test_missed_slot_within_grace_is_sent_once_now():
    decision = due_slot(utc(2026, 11, 26, 9), "2026-11-25T07:00:00+00:00", SEVEN_UTC, SIX_HOURS)
    assert decision.slot == "2026-11-26T07:00:00+00:00" and decision.missed == 1
    assert "missed 2.0 h ago, within the grace period of 6.0 h: sending it now" in decision.reason


def test_older_misses_are_coalesced_into_the_latest():
    decision = due_slot(utc(2026, 11, 26, 9), "2026-11-20T07:00:00+00:00", SEVEN_UTC, SIX_HOURS)
    assert decision.slot == "2026-11-26T07:00:00+00:00"
    assert decision.missed == 6
    assert "5 older missed slots since 2026-11-20T07:00:00+00:00 coalesced into it" in (
        decision.reason
    )


def test_misses_beyond_grace_are_skipped_and_said_so():
    decision = due_slot(utc(2026, 11, 26, 14), "2026-11-24T07:00:00+00:00", SEVEN_UTC, SIX_HOURS)
    assert decision.fire_time is None and decision.missed == 2
    assert decision.reason.startswith("skipped 2 missed slots since 2026-11-24T07:00:00+00:00")
    assert "7.0 h old, beyond the grace period of 6.0 h" in decision.reason


def test_new_database_catches_up_only_the_latest_slot_within_grace():
    inside = due_slot(utc(2026, 11, 26, 9), None, SEVEN_UTC, SIX_HOURS)
    assert inside.slot == "2026-11-26T07:00:00+00:00" and inside.missed == 1
    outside = due_slot(utc(2026, 11, 26, 14), None, SEVEN_UTC, SIX_HOURS)
    assert outside.fire_time is None
    assert outside.reason.startswith("no slot has run on this database yet")


def test_zero_grace_still_runs_a_slot_a_few_seconds_late():
    late = utc(2026, 11, 26, 7) + ON_TIME
    assert due_slot(late, None, SEVEN_UTC, timedelta(0)).slot is not None
    too_late = late + timedelta(seconds=1)
    assert due_slot(too_late, None, SEVEN_UTC, timedelta(0)).fire_time is None


def test_missed_slot_across_fall_back_in_local_time():
    now = datetime(2026, 10, 25, 9, tzinfo=BERLIN)  # two hours after 07:00 CET
    decision = due_slot(now, "2026-10-24T05:00:00+00:00", SEVEN_BERLIN, SIX_HOURS)
    assert decision.slot == "2026-10-25T06:00:00+00:00"
    assert "(2026-10-25 07:00:00 CET)" in decision.reason


def test_retry_stays_within_grace_and_before_the_next_slot():
    fire = utc(2026, 11, 26, 7)
    nxt = fire + DAY
    five = timedelta(minutes=5)
    assert retry_at(fire + timedelta(minutes=1), fire, nxt, SIX_HOURS, five) == fire + timedelta(
        minutes=6
    )
    assert retry_at(fire + timedelta(hours=5, minutes=56), fire, nxt, SIX_HOURS, five) is None
    hourly_next = fire + timedelta(hours=1)
    assert retry_at(fire + timedelta(minutes=56), fire, hourly_next, SIX_HOURS, five) is None


# -- claiming slots in the database -------------------------------------------------------


def _dead_owner() -> str:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return f"{socket.gethostname()}:{finished.stdout.strip()}"


def test_a_slot_is_claimed_by_one_owner(make_context, clock: FrozenClock):
    ctx = make_context()
    slot = "2026-11-26T07:00:00+00:00"
    with ctx.store.atomic() as conn:
        assert slots.claim(conn, slot, "host-a:1", now=clock()) is None
        refused = slots.claim(conn, slot, "host-b:2", now=clock())
    assert refused == "host-a:1 is running it since 2026-11-26 07:00:00 UTC"


def test_a_done_slot_is_never_claimed_again(make_context, clock: FrozenClock):
    ctx = make_context()
    slot = "2026-11-26T07:00:00+00:00"
    with ctx.store.atomic() as conn:
        slots.claim(conn, slot, "host-a:1", now=clock())
        slots.finish(conn, slot, "host-a:1", outcome="sent digest 1", done=True, now=clock())
        assert slots.claim(conn, slot, "host-b:2", now=clock()) == (
            "already done by host-a:1: sent digest 1"
        )
        assert slots.last_done_slot(conn) == slot


def test_a_failed_slot_can_be_claimed_again(make_context, clock: FrozenClock):
    ctx = make_context()
    slot = "2026-11-26T07:00:00+00:00"
    with ctx.store.atomic() as conn:
        slots.claim(conn, slot, "host-a:1", now=clock())
        slots.finish(conn, slot, "host-a:1", outcome="failed: SMTP down", done=False, now=clock())
        assert slots.last_done_slot(conn) is None
        assert slots.claim(conn, slot, "host-b:2", now=clock()) is None
        row = slots.get(conn, slot)
    assert row is not None and row.owner == "host-b:2" and row.outcome is None


def test_a_claim_left_by_a_dead_process_can_be_taken_over(make_context, clock: FrozenClock):
    ctx = make_context()
    slot = "2026-11-26T07:00:00+00:00"
    with ctx.store.atomic() as conn:
        slots.claim(conn, slot, _dead_owner(), now=clock())
        assert slots.claim(conn, slot, locks.process_owner(), now=clock()) is None


# -- running a slot against a real SMTP server --------------------------------------------


def _schedule(cron: str = "0 7 * * *", zone: str = "UTC", grace: int = 360) -> Schedule:
    return Schedule(cron, ZoneInfo(zone), timedelta(minutes=grace))


def _subscribe(ctx: Context, clock: FrozenClock, count: int = 2) -> list[str]:
    emails = [f"reader{i}@example.org" for i in range(count)]
    for email in emails:
        add_subscriber(ctx.store, email, "", now=clock())
    return emails


def _slot_row(ctx: Context, slot: str) -> slots.SlotRun:
    with ctx.store.atomic() as conn:
        row = slots.get(conn, slot)
    assert row is not None
    return row


def _digest_count(ctx: Context) -> int:
    with ctx.store.atomic() as conn:
        return int(conn.execute(select(func.count()).select_from(digests)).scalar_one())


def test_due_slot_sends_one_digest_to_each_subscriber(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    emails = _subscribe(ctx, clock)
    clock.advance(seconds=2)
    runner = SlotRunner(ctx, _schedule(), owner="host-a:1")

    result = runner.run_due()

    slot = "2026-11-26T07:00:00+00:00"
    assert result is not None and result.slot == slot and result.done
    assert result.outcome.startswith("sent digest 1 (")
    assert sorted(smtp_server.handler.recipients()) == emails
    row = _slot_row(ctx, slot)
    assert row.done and row.outcome == result.outcome
    with ctx.store.atomic() as conn:
        assert conn.execute(select(digests.c.slot)).scalars().all() == [slot]

    assert runner.run_due() is None  # the slot is done
    other = SlotRunner(ctx, _schedule(), owner="host-b:2")
    assert other.run_due() is None
    assert len(smtp_server.received) == 2


def test_a_slot_claimed_elsewhere_is_left_alone(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock, caplog
):
    caplog.set_level(logging.INFO, logger="newsletter")
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock)
    slot = "2026-11-26T07:00:00+00:00"
    with ctx.store.atomic() as conn:
        slots.claim(conn, slot, "other-host:42", now=clock())

    assert SlotRunner(ctx, _schedule(), owner="host-a:1").run_due() is None

    assert smtp_server.received == []
    assert f"slot {slot}: not running it here: other-host:42 is running it" in caplog.text


def test_missed_slot_on_start_goes_out_with_its_own_slot_key(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock
):
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, count=1)
    clock.now = datetime(2026, 11, 26, 10, 30, tzinfo=BERLIN)  # 07:00 Berlin was missed

    result = SlotRunner(ctx, _schedule(zone="Europe/Berlin")).run_due()

    assert result is not None and result.slot == "2026-11-26T06:00:00+00:00" and result.done
    assert len(smtp_server.received) == 1


def test_miss_beyond_grace_sends_nothing_and_logs_it(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock, caplog
):
    caplog.set_level(logging.INFO, logger="newsletter")
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, count=1)
    clock.advance(hours=7)

    assert SlotRunner(ctx, _schedule(grace=360)).run_due() is None

    assert smtp_server.received == [] and _digest_count(ctx) == 0
    assert "is 7.0 h old, beyond the grace period of 6.0 h" in caplog.text


def test_smtp_down_is_logged_retried_and_the_next_run_succeeds(
    make_context, clock: FrozenClock, caplog
):
    caplog.set_level(logging.INFO, logger="newsletter")
    down = make_context(smtp={"port": free_port()})
    emails = _subscribe(down, clock)
    retries: list[datetime] = []
    runner = SlotRunner(down, _schedule(), on_retry=retries.append, owner="host-a:1")

    failed = runner.run_due()

    slot = "2026-11-26T07:00:00+00:00"
    assert failed is not None and not failed.done
    assert failed.outcome.startswith("failed: cannot connect to the SMTP server 127.0.0.1:")
    assert retries == [clock() + timedelta(minutes=5)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"slot {slot} failed: cannot connect" in errors[0].getMessage()
    assert "(caused by ConnectionRefusedError(" in errors[0].getMessage()  # the log keeps it
    assert not _slot_row(down, slot).done

    clock.advance(minutes=5)
    with SmtpTestServer() as server:
        up = make_context(smtp={"port": server.port})  # same database
        result = SlotRunner(up, _schedule(), owner="host-b:2").run_due()
        assert result is not None and result.slot == slot and result.done
        assert sorted(server.handler.recipients()) == emails
    assert _slot_row(up, slot).owner == "host-b:2"


def test_one_failed_slot_does_not_stop_the_next(make_context, clock: FrozenClock):
    down = make_context(smtp={"port": free_port()})
    _subscribe(down, clock, count=1)
    assert SlotRunner(down, _schedule(grace=0)).run_due() is not None

    clock.advance(days=1)
    with SmtpTestServer() as server:
        up = make_context(smtp={"port": server.port})
        result = SlotRunner(up, _schedule(grace=0)).run_due()
        assert result is not None and result.slot == "2026-11-27T07:00:00+00:00" and result.done
        assert len(server.received) == 1


def test_another_send_in_progress_is_info_and_retried(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock, caplog
):
    caplog.set_level(logging.INFO, logger="newsletter")
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, count=1)
    with ctx.store.atomic() as conn:
        locks.try_acquire(
            conn, locks.SEND_LOCK, "other-host:7", now=clock(), ttl=timedelta(hours=1)
        )
    retries: list[datetime] = []

    result = SlotRunner(ctx, _schedule(), on_retry=retries.append).run_due()

    assert result is not None and not result.done and result.outcome.startswith("busy: ")
    assert retries and smtp_server.received == []
    record = next(r for r in caplog.records if "another process is sending" in r.getMessage())
    assert record.levelno == logging.INFO


def test_a_slot_made_elsewhere_at_the_same_moment_sends_nothing(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock, monkeypatch
):
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, count=1)
    slot = "2026-11-26T07:00:00+00:00"

    def raced(racing_ctx: Context, **kwargs: bool) -> tuple[object, object]:
        upcoming, gathered = next_digest(racing_ctx, **kwargs)
        assert upcoming is not None
        with ctx.store.atomic() as conn:  # another process, between the check and the insert
            digest_rows.create_digest(
                conn, upcoming.rendered, token_nonce="NL000000000000", slot=slot, now=clock()
            )
        return upcoming, gathered

    monkeypatch.setattr("newsletter.app.send.next_digest", raced)
    with pytest.raises(
        SendInProgress, match="at the same moment; nothing was sent twice"
    ) as caught:
        app.send_now(ctx, slot=slot)

    assert isinstance(caught.value.__cause__, digest_rows.DigestConflict)  # the store's reason
    assert smtp_server.received == []
    assert _digest_count(ctx) == 1  # only the other process's digest


def test_unexpected_error_is_recorded_and_does_not_escape(
    make_context, clock: FrozenClock, monkeypatch, caplog
):
    ctx = make_context()

    def broken(*args: object, **kwargs: object) -> app.SendSummary:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("newsletter.app.slots.send_now", broken)  # where slots call it
    result = SlotRunner(ctx, _schedule()).run_due()

    assert result is not None and result.outcome == "failed: RuntimeError: disk on fire"
    assert "disk on fire" in caplog.text


def test_nothing_new_is_a_done_slot(
    make_context, smtp_server: SmtpTestServer, clock: FrozenClock, tmp_path: Path
):
    empty = tmp_path / "no-articles"
    empty.mkdir()
    ctx = make_context(smtp={"port": smtp_server.port}, sources={"articles_dir": str(empty)})
    _subscribe(ctx, clock, count=1)
    result = SlotRunner(ctx, _schedule()).run_due()
    assert result is not None and result.done
    assert result.outcome == "no new digest: no new articles since the last digest"


def test_a_stopped_runner_starts_nothing(make_context, smtp_server: SmtpTestServer, clock):
    ctx = make_context(smtp={"port": smtp_server.port})
    _subscribe(ctx, clock, count=1)
    stop = threading.Event()
    stop.set()
    assert SlotRunner(ctx, _schedule(), stop=stop).run_due() is None
    assert smtp_server.received == []


# -- the APScheduler process, in-process ---------------------------------------------------


def test_scheduler_job_uses_the_configured_zone(make_context):
    ctx = make_context()
    service = DigestService(ctx, _schedule(zone="America/New_York"), stop=threading.Event())
    next_run = service.start(paused=True)
    try:
        job = service.scheduler.get_job(DIGEST_JOB)
        assert job.trigger.timezone == NEW_YORK
        assert next_run is not None and next_run.tzinfo == NEW_YORK
        assert (next_run.hour, next_run.minute) == (7, 0)
    finally:
        service.shutdown()


def test_run_until_stopped_sends_the_due_slot_then_stops(
    make_settings, smtp_server: SmtpTestServer
):
    settings = make_settings(smtp={"port": smtp_server.port})
    ctx = Context.open(settings)  # the real clock: APScheduler runs on real time
    try:
        emails = _subscribe(ctx, FrozenClock(datetime.now(UTC)))
        stop = threading.Event()
        worker = threading.Thread(
            target=run_until_stopped,
            args=(ctx, _schedule("* * * * * *")),
            kwargs={"stop": stop},
            daemon=True,
        )
        worker.start()
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while len(smtp_server.received) < len(emails) and datetime.now(UTC) < deadline:
            stop.wait(0.05)
        stop.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert sorted(smtp_server.handler.recipients()) == emails
        assert _digest_count(ctx) == 1
    finally:
        ctx.close()


# -- the commands -------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)

    def write(cron: str = "0 7 * * 1-5", zone: str = "Europe/Berlin") -> Path:
        path = tmp_path / "newsletter.toml"
        path.write_text(
            f'[store]\nurl = "sqlite:///{tmp_path / "news.db"}"\n'
            f'[sources]\narticles_dir = "{SEEDS}"\n'
            f'[schedule]\ncron = "{cron}"\ntimezone = "{zone}"\ngrace_minutes = 60\n'
            '[logging]\nlevel = "WARNING"\n'
        )
        return path

    return write


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_guarded(cli, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_prints_the_next_runs_in_local_time(config_file, capsys):
    code, out, err = _cli(capsys, "--config", str(config_file()), "schedule", "-n", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "cron '0 7 * * 1-5' in Europe/Berlin, grace period 60 min"
    assert lines[1] == "next runs:"
    runs = lines[2:5]
    assert all(" 07:00:00 CE" in line and "(slot 20" in line for line in runs)
    assert not any(day in line for line in runs for day in ("Sat", "Sun"))
    assert lines[5].startswith("on start now: ")


def test_run_dry_run_prints_the_schedule_and_sends_nothing(config_file, capsys):
    code, out, _ = _cli(capsys, "--config", str(config_file()), "run", "--dry-run")
    assert code == 0
    runs = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(runs) == 5 and all(" 07:00:00 CE" in line for line in runs)
    assert "on start now: " in out


def test_run_with_a_bad_cron_exits_2_naming_the_key(config_file, capsys):
    code, out, err = _cli(capsys, "--config", str(config_file(cron="0 7 * *")), "run")
    assert code == 2 and out == ""
    assert err.startswith("error: [schedule] cron: '0 7 * *' is not a usable schedule: ")
    assert err.count("\n") == 1
