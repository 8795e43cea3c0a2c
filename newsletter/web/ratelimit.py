"""A per-key sliding-window rate limit, in memory (one process), with an injected clock."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timedelta


class SlidingWindow:
    """At most ``limit`` hits per ``window`` for each key (an IP address).

    Memory is bounded: at most ``max_keys`` keys are tracked; past that, the key seen least
    recently is forgotten first.
    """

    def __init__(
        self,
        limit: int,
        window: timedelta,
        *,
        clock: Callable[[], datetime],
        max_keys: int = 10_000,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._hits: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count one hit; 0 if allowed, else the seconds to wait before the next is allowed."""
        now = self._clock()
        start = now - self.window
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            while hits and hits[0] <= start:
                hits.popleft()
            self._hits[key] = hits  # (re)inserted last: the most recently seen key
            if len(hits) >= self.limit:
                wait = (hits[0] - start).total_seconds()
                return max(1.0, math.ceil(wait))
            hits.append(now)
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
            return 0.0

    def __len__(self) -> int:
        return len(self._hits)
