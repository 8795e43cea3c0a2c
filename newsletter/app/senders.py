"""The senders on one database: each process that delivers keeps a row with a heartbeat.

Every ``newsletter worker`` and every delivering ``send-now``/``run``/``resend`` registers a
lock row (:func:`newsletter.store.locks.register_sender`) for as long as it runs, renewed every
``HEARTBEAT_SECONDS``; a row not renewed for ``[workers] lease_seconds`` no longer counts.

Where several senders can deliver at once (PostgreSQL), the live rows are how they share
``[smtp] connections`` and ``max_per_second`` (:mod:`newsletter.delivery.shares`): each one
works out its own share from the same sorted list at every heartbeat. A sender that joins
takes no share until every other live sender has had a heartbeat two heartbeat intervals
after it joined (by then each has seen it, taken its smaller share and hung up the connections
it gave up, if it beats on time), or ``JOIN_WAIT_SECONDS`` passed (a sender that did not
beat by then is stalled, and sends nothing); a sender that leaves deletes its row after its
connections closed. So, as long as the hosts' clocks agree, the senders together never use
more than the configured connections and rate. On SQLite, one sender delivers at a time (the
send lock) and gets the whole; the rows then only tell whether a worker is running.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from newsletter.app.context import Context
from newsletter.delivery.leases import new_owner
from newsletter.delivery.shares import Share, share_of
from newsletter.store import locks

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
JOIN_WAIT_SECONDS = 4 * HEARTBEAT_SECONDS + 1.0
SETTLE_POLL_SECONDS = 0.25  # while joining: how often to look whether the others saw it
WORKER = "worker"


def senders_share_digests(ctx: Context) -> bool:
    """Whether several processes can deliver at once on this database (not on SQLite)."""
    return ctx.store.engine.dialect.name != "sqlite"


class SenderPresence:
    """This process's sender row: ``beat()`` renews it now and then and returns the share."""

    def __init__(self, ctx: Context, role: str) -> None:
        self.ctx = ctx
        self.role = role
        self.name = f"{locks.SENDER_PREFIX}{role}:{secrets.token_hex(8)}"
        self.owner = new_owner()
        self.shares_limits = senders_share_digests(ctx)
        self.ttl = timedelta(seconds=ctx.settings.workers.lease_seconds)
        self.every = min(HEARTBEAT_SECONDS, self.ttl.total_seconds() / 3)
        self._share: Share | None = None
        self._last_beat = 0.0
        self._joined_at: datetime | None = None  # after the row was committed
        self._joined_mono = 0.0
        self._settled = False  # every other sender has seen this one

    def join(self) -> None:
        """Add this sender's row; until the others saw it, its share is no connection."""
        with self.ctx.store.atomic() as conn:
            locks.register_sender(conn, self.name, self.owner, now=self.ctx.clock(), ttl=self.ttl)
        self._joined_at = self.ctx.clock()
        self._joined_mono = time.monotonic()
        self._settled = False
        self._last_beat = 0.0

    def leave(self) -> None:
        with self.ctx.store.atomic() as conn:
            locks.release(conn, self.name, self.owner)

    def beat(self, *, now: bool = False) -> Share | None:
        """Renew the row when a heartbeat is due (or ``now``); this sender's share of the SMTP
        limits (None: all of them, no other sender can deliver at the same time)."""
        if not now and time.monotonic() - self._last_beat < self.every:
            return self._share
        self._last_beat = time.monotonic()
        at = self.ctx.clock()
        with self.ctx.store.atomic() as conn:
            alive = locks.sender_heartbeat(conn, self.name, now=at, ttl=self.ttl)
            live = locks.live_senders(conn, now=at) if alive and self.shares_limits else []
        if not alive:  # stalled past its TTL, and the row was cleared: join again
            log.warning("this sender was not heard of for %s; it joins again", self.ttl)
            self.join()
            return self._share if not self.shares_limits else self._no_share()
        if not self.shares_limits:
            return None
        names = [row.name for row in live]
        if self.name not in names:  # its process looks dead from here: cannot happen
            return self._no_share()
        if not self._settled:
            joined = self._joined_at
            assert joined is not None
            others = [row for row in live if row.name != self.name]
            waited = time.monotonic() - self._joined_mono
            # Two heartbeats after this one joined: the first saw it (each took its smaller
            # share, and hung up the connections it gave up), the second says that is done.
            self._settled = waited >= JOIN_WAIT_SECONDS or all(
                row.heartbeat_at >= joined + timedelta(seconds=2 * self.every) for row in others
            )
            if not self._settled:  # look again soon
                self._last_beat = time.monotonic() - self.every + SETTLE_POLL_SECONDS
                return self._no_share(len(live))
        settings = self.ctx.settings.smtp
        self._share = share_of(
            settings.max_per_second,
            settings.connections,
            rank=names.index(self.name),
            senders=len(names),
        )
        return self._share

    def _no_share(self, senders: int = 1) -> Share:
        self._share = Share(0.0 if self.ctx.settings.smtp.max_per_second else None, 0, senders)
        return self._share


@contextmanager
def sender_presence(ctx: Context, role: str) -> Iterator[SenderPresence]:
    """Be one of the database's senders for the block (the row is removed at the end)."""
    presence = SenderPresence(ctx, role)
    presence.join()
    try:
        yield presence
    finally:
        try:
            presence.leave()
        except Exception:  # the row lapses by itself; the original error matters more
            log.warning("could not remove this sender's row; it lapses by itself")


def live_workers(ctx: Context) -> int:
    """How many ``newsletter worker`` processes are running on this database now."""
    prefix = f"{locks.SENDER_PREFIX}{WORKER}:"
    with ctx.store.atomic() as conn:
        live = locks.live_senders(conn, now=ctx.clock())
    return sum(1 for row in live if row.name.startswith(prefix))
