"""Per-client limits: who the client is behind trusted proxies, and a sliding-window limit.

The limit is in memory (one process) with an injected clock.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from starlette.requests import Request

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """The client's IP address, from ``X-Forwarded-For`` only when a trusted proxy sent it.

    ``trusted``: the ``[web] trusted_proxies`` networks. From anyone else the header is
    ignored (a client can write anything there); from a trusted proxy the address is the
    last one in the header that is not a trusted proxy itself (proxies append what they see).
    """

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trusted: list[IpNetwork] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def of(self, request: Request) -> str:
        """The address to count ``request`` against."""
        peer = request.client.host if request.client else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if self._is_trusted(hop):
                continue
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # not what a proxy writes: count it against the proxy
        return peer


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
