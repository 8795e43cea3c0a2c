"""Adaptive throttling: send slower when the SMTP server says we are too fast (AIMD).

Providers answer a sender that goes too fast with 421 (closing the connection), or with a
451/450/454 that says so ("rate limit", "too many connections", "throttling", "try again
later"). Only those count: a 451 "mailbox busy" or a 454 "TLS not available" is one message's
or one setting's problem, not a request to slow down (the caller retries it with backoff and
gives up after a while, which it never does for a throttled message). On a throttle reply
:class:`AdaptiveThrottle` halves the allowed rate and the allowed number of connections
(floors: ``min_per_second`` and one connection; a reply that only says "too many
connections" or "sessions" halves the connections alone: it is no request to send fewer
messages), and after each quiet period without one it
adds a step back (a tenth of the ceiling to the rate, one connection), up to the configured
``max_per_second`` and ``connections``, which stay ceilings. Throttle replies to messages that
were already in flight when it slowed down (within ``cooldown_seconds``) do not halve again.

It only decides: ``reserve`` returns how long to wait before the next message (the caller
waits, and can be interrupted meanwhile), ``limits().connections`` says how many connections
may be open, and every change is reported once to each listener (``on_change``,
``add_listener``) so the caller can log one line. The clock is injected; all methods are
thread-safe.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

THROTTLE_CODES = frozenset({421})  # "service not available, closing": also too many sessions
_THROTTLE_TEXT = re.compile(
    r"too many (?:connections|sessions|messages|mails|recipients)|rate.?limit|throttl"
    r"|try again later|slow down",
    re.IGNORECASE,
)
_CONNECTIONS_TEXT = re.compile(r"too many (?:connections|sessions)", re.IGNORECASE)
RATE_WINDOW_SECONDS = 1.0  # the sending rate before the first throttle is measured over this


def is_throttle_reply(code: int | None, text: str) -> bool:
    """True for a reply that asks us to slow down: 421, or any 4xx whose text says so."""
    if code is None or not 400 <= code < 500:
        return False
    return code in THROTTLE_CODES or _THROTTLE_TEXT.search(text) is not None


@dataclass(frozen=True, slots=True)
class Limits:
    """What may be used now: messages per second (None: no limit) and open connections."""

    per_second: float | None
    connections: int

    def describe(self) -> str:
        rate = "no rate limit" if self.per_second is None else f"{self.per_second:.3g} msg/s"
        plural = "" if self.connections == 1 else "s"
        return f"{rate}, {self.connections} connection{plural}"


@dataclass(frozen=True, slots=True)
class ThrottleChange:
    """One change of the limits, and why."""

    before: Limits
    after: Limits
    reason: str

    @property
    def slower(self) -> bool:
        return self.after.connections < self.before.connections or _rate(self.after) < _rate(
            self.before
        )

    def describe(self) -> str:
        """One log line: ``sending slower: 5 msg/s, 1 connection (was ...): <reason>``."""
        direction = "slower" if self.slower else "faster"
        return (
            f"sending {direction}: {self.after.describe()} (was {self.before.describe()}): "
            f"{self.reason}"
        )


def _rate(limits: Limits) -> float:
    return float("inf") if limits.per_second is None else limits.per_second


class AdaptiveThrottle:
    """AIMD limits for one send; see the module docstring."""

    def __init__(
        self,
        *,
        max_per_second: float | None,
        connections: int,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[ThrottleChange], None] | None = None,
        min_per_second: float = 1.0,
        quiet_seconds: float = 30.0,
        cooldown_seconds: float = 2.0,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if max_per_second is not None and max_per_second <= 0:
            raise ValueError("max_per_second must be positive")
        self.max_per_second = max_per_second
        self.max_connections = connections
        self._clock = clock
        self._listeners: list[Callable[[ThrottleChange], None]] = [on_change] if on_change else []
        self._min_per_second = min_per_second
        self._floor = min(min_per_second, max_per_second) if max_per_second else min_per_second
        self._quiet = quiet_seconds
        self._cooldown = cooldown_seconds
        self._lock = threading.Lock()
        self._limits = Limits(max_per_second, connections)
        self._step = (max_per_second or 0.0) / 10  # set at the first throttle without a ceiling
        self._unthrottled: float | None = max_per_second  # the rate to go back to
        self._next_slot = 0.0
        self._recent: deque[float] = deque()  # send times within RATE_WINDOW_SECONDS
        self._last_decrease: float | None = None
        self._last_event = 0.0  # last throttle reply or change: starts the quiet period

    def add_listener(self, on_change: Callable[[ThrottleChange], None]) -> None:
        """Also report every change to ``on_change`` (called outside the lock)."""
        with self._lock:
            self._listeners.append(on_change)

    def set_ceiling(self, max_per_second: float | None, connections: int, reason: str) -> None:
        """New ceilings (this sender's share of the configured ones changed): limits at the
        old ceiling move to the new one; limits below it (throttled) stay, capped by it."""
        if connections < 1:
            raise ValueError("connections must be at least 1")
        with self._lock:
            before = self._limits
            at_ceiling = before == Limits(self.max_per_second, self.max_connections)
            self.max_per_second, self.max_connections = max_per_second, connections
            floor = self._min_per_second
            self._floor = min(floor, max_per_second) if max_per_second else floor
            if max_per_second is not None:
                self._step = max_per_second / 10
                self._unthrottled = max_per_second
            if at_ceiling:
                after = Limits(max_per_second, connections)
            else:
                rate = before.per_second
                if max_per_second is not None and (rate is None or rate > max_per_second):
                    rate = max_per_second
                after = Limits(rate, min(before.connections, connections))
            self._limits = after
            change = ThrottleChange(before, after, reason) if after != before else None
        self._report(change)

    def limits(self) -> Limits:
        """The limits now (after any step back up that is due)."""
        with self._lock:
            change = self._recover(self._clock())
            limits = self._limits
        self._report(change)
        return limits

    def reserve(self) -> float:
        """Take the next send slot: seconds the caller waits before sending (0.0: now)."""
        with self._lock:
            now = self._clock()
            change = self._recover(now)
            self._count_send(now)
            rate = self._limits.per_second
            delay = 0.0
            if rate is not None:
                slot = max(now, self._next_slot)
                self._next_slot = slot + 1.0 / rate
                delay = slot - now
        self._report(change)
        return delay

    def observe(self, code: int | None, text: str) -> bool:
        """Feed one SMTP reply; True if it was a throttle reply (the limits may have dropped)."""
        if not is_throttle_reply(code, text):
            return False
        connections_only = _CONNECTIONS_TEXT.search(text) is not None
        with self._lock:
            now = self._clock()
            reason = f"the server answered {code} {text}"
            change = self._decrease(now, reason, connections_only=connections_only)
            self._last_event = now
        self._report(change)
        return True

    # -- under the lock --------------------------------------------------------------------
    def _count_send(self, now: float) -> None:
        self._recent.append(now)
        self._forget_before(now - RATE_WINDOW_SECONDS)

    def _forget_before(self, start: float) -> None:
        recent = self._recent
        while recent and recent[0] <= start:
            recent.popleft()

    def _decrease(
        self, now: float, reason: str, *, connections_only: bool
    ) -> ThrottleChange | None:
        if self._last_decrease is not None and now - self._last_decrease < self._cooldown:
            return None  # sent before the last decrease took effect
        before = self._limits
        rate = before.per_second if connections_only else self._halved_rate(now)
        after = Limits(rate, max(1, before.connections // 2))
        if after == before:
            return None
        self._limits = after
        self._last_decrease = now
        if rate != before.per_second:
            self._next_slot = max(self._next_slot, now + 1.0 / (rate or 1.0))
        return ThrottleChange(before, after, reason)

    def _halved_rate(self, now: float) -> float:
        current = self._limits.per_second
        if current is None:  # no ceiling: halve what we were actually sending
            self._forget_before(now - RATE_WINDOW_SECONDS)
            current = max(float(len(self._recent)) / RATE_WINDOW_SECONDS, 2 * self._floor)
            if self._unthrottled is None:
                self._unthrottled = current
                self._step = current / 10
        return max(self._floor, current / 2)

    def _recover(self, now: float) -> ThrottleChange | None:
        before = self._limits
        at_ceiling = before.per_second == self.max_per_second
        if at_ceiling and before.connections == self.max_connections:
            return None
        if now - self._last_event < self._quiet:
            return None
        rate = before.per_second
        if rate is not None and not at_ceiling:
            rate += self._step
            target = self._unthrottled
            if target is not None and rate >= target:
                rate = self.max_per_second  # back to the ceiling, or to no limit at all
        after = Limits(rate, min(self.max_connections, before.connections + 1))
        self._limits = after
        self._last_event = now
        quiet = f"no throttling for {self._quiet:g} s"
        return ThrottleChange(before, after, quiet)

    # -- outside the lock ---------------------------------------------------------------------
    def _report(self, change: ThrottleChange | None) -> None:
        if change is None:
            return
        for listener in list(self._listeners):
            listener(change)
