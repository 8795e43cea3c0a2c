"""A global send rate shared by all connections: evenly spaced messages, not bursts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Hands out send slots ``1/per_second`` apart; ``acquire`` waits for the next slot."""

    def __init__(
        self,
        per_second: float | None,
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._stop = stop
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Wait for a slot; False if a stop was requested while waiting."""
        if not self._interval:
            return not self._stop.is_set()
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self._interval
        delay = slot - now
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()
