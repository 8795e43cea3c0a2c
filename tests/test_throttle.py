"""Adaptive throttling (AIMD) with a manual clock: halve on throttle replies, creep back up."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.delivery.throttle import (
    AdaptiveThrottle,
    Limits,
    ThrottleChange,
    is_throttle_reply,
)
from tests.pipelining_servers import ManualClock


def fresh() -> tuple[ManualClock, list[ThrottleChange]]:
    return ManualClock(), []


def make(
    clock: ManualClock,
    changes: list[ThrottleChange],
    *,
    max_per_second: float | None = 20.0,
    connections: int = 4,
) -> AdaptiveThrottle:
    return AdaptiveThrottle(
        max_per_second=max_per_second,
        connections=connections,
        clock=clock,
        on_change=changes.append,
        min_per_second=1.0,
        quiet_seconds=30.0,
        cooldown_seconds=2.0,
    )


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.7.0 closing connection", True),
        (451, "4.7.1 rate limited, please try again later", True),
        (454, "Throttling failure: Maximum sending rate exceeded.", True),  # Amazon SES
        (451, "4.7.500 Server busy. Please try again later", True),  # Microsoft 365
        (451, "4.3.0 local problem", False),  # the server's problem: retried with backoff
        (451, "4.2.0 mailbox busy", False),  # the recipient's: may be given up after a while
        (454, "4.7.0 TLS not available", False),
        (450, "4.7.1 Rate limit exceeded for sender", True),
        (452, "4.5.3 Too many recipients", True),
        (450, "4.2.0 Throttled, please slow down", True),
        (450, "4.7.1 Try again later", True),
        (450, "4.2.1 mailbox busy", False),
        (550, "5.7.1 rate limit exceeded", False),  # permanent: not a request to slow down
        (250, "2.0.0 Ok", False),
        (None, "rate limit", False),
    ],
)
def test_throttle_replies_are_recognised(code: int | None, text: str, expected: bool) -> None:
    assert is_throttle_reply(code, text) is expected


@settings(max_examples=200, deadline=None)
@given(code=st.one_of(st.none(), st.integers(-1, 999)), text=st.text(max_size=200))
def test_only_temporary_replies_can_be_throttle_replies(code: int | None, text: str) -> None:
    if is_throttle_reply(code, text):
        assert code is not None and 400 <= code < 500


def test_a_throttle_reply_halves_rate_and_connections_once_per_cooldown() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    assert throttle.observe(421, "4.7.0 rate limit exceeded") is True
    assert throttle.limits() == Limits(10.0, 2)
    assert len(changes) == 1
    change = changes[0]
    assert (change.before, change.after) == (Limits(20.0, 4), Limits(10.0, 2))
    line = change.describe()
    assert "slower" in line and "421 4.7.0 rate limit exceeded" in line and "10 msg/s" in line

    # Replies to messages that were in flight before it slowed down: no second halving.
    clock.advance(1.9)
    assert throttle.observe(451, "4.3.0 try again later") is True
    assert throttle.limits() == Limits(10.0, 2)
    assert len(changes) == 1

    clock.advance(0.2)  # past the cooldown: a new signal halves again
    throttle.observe(421, "4.7.0 closing connection")
    assert throttle.limits() == Limits(5.0, 1)
    assert len(changes) == 2


@pytest.mark.parametrize(
    "text",
    ["4.7.0 Error: too many connections from 192.0.2.1", "4.3.2 Too many sessions, try later"],
)
def test_too_many_connections_halves_the_connections_and_keeps_the_rate(text: str) -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    assert [throttle.reserve() for _ in range(2)] == pytest.approx([0.0, 0.05])
    assert throttle.observe(421, text) is True
    assert throttle.limits() == Limits(20.0, 2)
    assert throttle.reserve() == pytest.approx(0.10)  # the slots go on as before
    assert [c.describe() for c in changes] == [
        f"sending slower: 20 msg/s, 2 connections (was 20 msg/s, 4 connections): "
        f"the server answered 421 {text}"
    ]
    clock.advance(2.0)
    throttle.observe(421, "4.7.0 rate limit exceeded")  # a rate signal halves the rate too
    assert throttle.limits() == Limits(10.0, 1)

    without_ceiling = make(clock, [], max_per_second=None, connections=3)
    without_ceiling.observe(421, text)
    assert without_ceiling.limits() == Limits(None, 1)


def test_other_replies_change_nothing() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    assert throttle.observe(250, "2.0.0 Ok") is False
    assert throttle.observe(550, "5.1.1 no such user") is False
    assert throttle.observe(450, "4.2.1 mailbox busy") is False
    assert throttle.limits() == Limits(20.0, 4)
    assert changes == []


def test_floors_one_connection_and_the_minimum_rate() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    for _ in range(10):
        throttle.observe(421, "4.7.0 rate limit")
        clock.advance(2.0)
    assert throttle.limits() == Limits(1.0, 1)
    assert [c.after.per_second for c in changes] == [10.0, 5.0, 2.5, 1.25, 1.0]
    assert changes[-1].after.connections == 1


def test_the_rate_creeps_back_up_after_quiet_periods_to_the_ceiling_and_no_further() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    throttle.observe(421, "4.7.0 rate limit")
    clock.advance(29.9)
    assert throttle.limits() == Limits(10.0, 2)  # not quiet long enough yet
    clock.advance(0.1)
    assert throttle.limits() == Limits(12.0, 3)  # a tenth of the ceiling, one connection
    assert "faster" in changes[-1].describe() and "no throttling for 30 s" in changes[-1].reason

    seen = []
    for _ in range(10):
        clock.advance(30.0)
        seen.append(throttle.limits())
    assert seen[:4] == [Limits(14.0, 4), Limits(16.0, 4), Limits(18.0, 4), Limits(20.0, 4)]
    assert set(seen[4:]) == {Limits(20.0, 4)}
    assert len(changes) == 6  # one halving, five steps up, nothing once at the ceiling


def test_a_throttle_reply_restarts_the_quiet_period_even_without_a_change() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    throttle.observe(421, "4.7.0 rate limit")
    clock.advance(1.0)
    throttle.observe(421, "4.7.0 rate limit")  # within the cooldown: no change, but not quiet
    clock.advance(29.5)
    assert throttle.limits() == Limits(10.0, 2)
    clock.advance(0.5)
    assert throttle.limits() == Limits(12.0, 3)


def test_reserve_spaces_sends_and_waits_longer_after_a_throttle() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes)
    assert [throttle.reserve() for _ in range(3)] == pytest.approx([0.0, 0.05, 0.10])
    clock.advance(1.0)  # the slots are in the past now
    assert throttle.reserve() == 0.0
    throttle.observe(421, "4.7.0 rate limit")  # 10 msg/s: the next slot is 0.1 s away
    assert throttle.reserve() == pytest.approx(0.1)
    assert throttle.reserve() == pytest.approx(0.2)


def test_without_a_ceiling_it_halves_the_measured_rate_and_lifts_the_limit_again() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes, max_per_second=None, connections=2)
    for _ in range(50):  # 50 messages within the last second
        assert throttle.reserve() == 0.0
        clock.advance(0.01)
    throttle.observe(421, "4.7.0 rate limit")
    assert throttle.limits() == Limits(25.0, 1)
    steps = []
    for _ in range(6):
        clock.advance(30.0)
        steps.append(throttle.limits())
    rates = [30.0, 35.0, 40.0, 45.0, None, None]  # back above 50: no limit at all
    assert steps == [Limits(rate, 2) for rate in rates]
    assert throttle.reserve() == 0.0


def test_reserve_is_thread_safe_every_slot_handed_out_once() -> None:
    clock, changes = fresh()
    throttle = make(clock, changes, max_per_second=100.0)
    delays: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [throttle.reserve() for _ in range(100)]
        with lock:
            delays.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    slots = sorted(round(d * 100) for d in delays)
    assert slots == list(range(800))


def test_the_change_is_reported_outside_the_lock() -> None:
    clock = ManualClock()
    seen: list[Limits] = []
    throttle: AdaptiveThrottle

    def on_change(change: ThrottleChange) -> None:
        seen.append(throttle.limits())  # would deadlock if called with the lock held

    throttle = AdaptiveThrottle(max_per_second=8.0, connections=2, clock=clock, on_change=on_change)
    throttle.observe(421, "4.7.0 rate limit")
    assert seen == [Limits(4.0, 1)]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 100)),
        st.tuples(st.just("observe"), st.sampled_from([421, 451, 454, 450, 550, 250])),
        st.tuples(st.just("reserve"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=operations,
    ceiling=st.one_of(st.none(), st.floats(0.1, 500)),
    connections=st.integers(1, 16),
)
def test_limits_stay_within_floor_and_ceiling_and_every_change_is_reported(
    ops: list[tuple[str, float]], ceiling: float | None, connections: int
) -> None:
    clock, changes = fresh()
    throttle = make(clock, changes, max_per_second=ceiling, connections=connections)
    floor = min(1.0, ceiling) if ceiling else 1.0
    for op, value in ops:
        if op == "advance":
            clock.advance(value)
        elif op == "observe":
            throttle.observe(int(value), "4.7.0 rate limit")
        else:
            assert throttle.reserve() >= 0.0
        limits = throttle.limits()
        assert 1 <= limits.connections <= connections
        if limits.per_second is not None:
            assert floor - 1e-9 <= limits.per_second
            assert ceiling is None or limits.per_second <= ceiling + 1e-9
        else:
            assert ceiling is None
    current = Limits(ceiling, connections)
    for change in changes:
        assert change.before == current and change.after != change.before
        current = change.after
    assert throttle.limits() == current
