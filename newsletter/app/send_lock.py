"""The send lock: one lock row in the database, so only one process sends on it at a time."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from newsletter.app.context import Context
from newsletter.errors import SendInProgress
from newsletter.store import locks

LOCK_TTL = timedelta(minutes=5)
LOCK_REFRESH = timedelta(seconds=30)


class SendLock:
    """The lock row held for a whole send, its lease extended while the send runs.

    ``name`` is the digests' send lock by default; confirmation emails have their own.
    """

    def __init__(self, ctx: Context, name: str = locks.SEND_LOCK) -> None:
        self.ctx = ctx
        self.name = name
        # Unique per send, so that a second send in the same process (the scheduler and the
        # web app, two threads) is refused like one from another process.
        self.owner = f"{locks.process_owner()}:{secrets.token_hex(4)}"
        self.refreshed_at = ctx.clock()

    def refresh(self) -> None:
        """Extend the lease now and then; ``SendInProgress`` if another process took it."""
        now = self.ctx.clock()
        if now - self.refreshed_at < LOCK_REFRESH:
            return
        with self.ctx.store.atomic() as conn:
            held = locks.refresh(conn, self.name, self.owner, now=now, ttl=LOCK_TTL)
        if not held:
            raise SendInProgress(
                "another process took over the send lock (this one stalled for longer than "
                f"{LOCK_TTL.total_seconds():.0f} s); stopped so that nobody gets the digest twice"
            )
        self.refreshed_at = now


@contextmanager
def send_lock(ctx: Context, *, name: str = locks.SEND_LOCK) -> Iterator[SendLock]:
    """Hold the send lock (or the lock ``name``), or raise ``SendInProgress`` naming who
    holds it."""
    lock = SendLock(ctx, name)
    with ctx.store.atomic() as conn:
        holder = locks.try_acquire(conn, name, lock.owner, now=ctx.clock(), ttl=LOCK_TTL)
    if holder is not None:
        raise SendInProgress(
            f"another send is running on this database ({holder}); try again when it ends"
        )
    try:
        yield lock
    finally:
        with ctx.store.atomic() as conn:
            locks.release(conn, name, lock.owner)
