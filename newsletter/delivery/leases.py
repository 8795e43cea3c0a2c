"""The leases of the rows one send has claimed: when to renew them, and whether they still hold.

A claim names its sender and lasts ``lease_seconds`` (``[workers] lease_seconds``); the
coordinator renews all of its rows every quarter of that. Its SMTP connections start a message
only while the last renewal is less than half a lease old: a send that stalled (a stopped
process, a lost database) stops sending before another sender can take its rows over, so a
message goes out twice only if it was on the wire when the stall began.

The owner is ``host:pid:tag`` (:func:`newsletter.store.locks.process_owner` and a random tag
per send), so a row left by a process that died on this host is taken over at once, and one
left by another host when its lease lapses.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from newsletter.store.locks import process_owner

DEFAULT_LEASE_SECONDS = 60.0


def new_owner() -> str:
    """A lease owner for one send: ``host:pid:tag``, unique even within one process."""
    return f"{process_owner()}:{secrets.token_hex(4)}"


class LeaseKeeper:
    """Tracks one send's leases: ``until`` for a claim, ``renew_due``, ``valid`` for workers."""

    def __init__(
        self,
        owner: str,
        lease_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self.renew_every = lease_seconds / 4
        self._monotonic = monotonic
        self._valid_for = lease_seconds / 2
        self._renewed = monotonic()

    def until(self, now: datetime) -> datetime:
        """When a lease taken or renewed at ``now`` lapses."""
        return now + self.lease

    def claimed(self, *, held_before: int) -> None:
        """Rows were claimed (and committed); with none held before, all are fresh."""
        if held_before == 0:
            self._renewed = self._monotonic()

    def renew_due(self) -> bool:
        return self._monotonic() - self._renewed >= self.renew_every

    def renewed(self) -> None:
        """Every held row's lease was extended (and committed) just now."""
        self._renewed = self._monotonic()

    def valid(self) -> bool:
        """May a message of a held row start now? Called by the SMTP worker threads."""
        return self._monotonic() - self._renewed < self._valid_for
