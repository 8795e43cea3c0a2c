"""Lock rows in the database: the send lock (one sender at a time on SQLite, and one
``send-now`` at a time anywhere), and the rows of the senders sharing the SMTP limits.

Also which delivery lease owners are gone (``lease_owner_is_gone``), so a row in ``sending``
whose sender died on this host is taken over at once instead of when its lease lapses.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.store.schema import locks

SEND_LOCK = "send"


def process_owner() -> str:
    """``host:pid`` of this process: lets a crashed owner on this host be detected at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str) -> bool:
    """True if ``owner`` (``host:pid`` or ``host:pid:tag``) is a process gone from this host."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not (pid.isascii() and pid.isdigit()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def try_acquire(
    conn: Connection, name: str, owner: str, *, now: datetime, ttl: timedelta
) -> str | None:
    """Take the lock. Returns None on success, else the current holder's description."""
    row = conn.execute(select(locks).where(locks.c.name == name)).first()
    if row is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    locks.insert().values(
                        name=name, owner=owner, acquired_at=now, expires_at=now + ttl
                    )
                )
        except IntegrityError:
            return "another process (it took the lock at the same moment)"
        return None
    if row.owner != owner and row.expires_at > now and not owner_is_dead(row.owner):
        return f"{row.owner} since {row.acquired_at:%Y-%m-%d %H:%M:%S} UTC"
    taken = conn.execute(
        update(locks)
        .where(
            locks.c.name == name, locks.c.owner == row.owner, locks.c.expires_at == row.expires_at
        )
        .values(owner=owner, acquired_at=now, expires_at=now + ttl)
    ).rowcount
    return None if taken == 1 else "another process (it took the lock at the same moment)"


def refresh(conn: Connection, name: str, owner: str, *, now: datetime, ttl: timedelta) -> bool:
    """Extend our lease; False if someone else holds the lock now."""
    return (
        conn.execute(
            update(locks)
            .where(locks.c.name == name, locks.c.owner == owner)
            .values(expires_at=now + ttl)
        ).rowcount
        == 1
    )


def release(conn: Connection, name: str, owner: str) -> None:
    conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))


# -- lease owners -------------------------------------------------------------------------------
# The lease owners (``host:pid:tag``) of the sends running in this process. A delivery leased
# by this process under a tag that is not running any more belongs to a send that ended
# without recording it (an error, a second Ctrl-C): it is as abandoned as a dead process's.
_running_here: set[str] = set()


@contextmanager
def running_owner(owner: str) -> Iterator[None]:
    """Mark ``owner`` (one send in this process) as running for as long as the block runs."""
    _running_here.add(owner)
    try:
        yield
    finally:
        _running_here.discard(owner)


def lease_owner_is_gone(owner: str) -> bool:
    """True if ``owner`` is a process gone from this host, or a send of this process that
    ended; an owner on another host is never known to be gone (its lease has to lapse)."""
    if owner_is_dead(owner):
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    here = host == socket.gethostname() and pid == str(os.getpid())
    return here and owner not in _running_here


# -- senders ----------------------------------------------------------------------------------
# Each process that delivers on a database where several may (PostgreSQL) keeps a lock row
# named ``sender:<role>:<token>`` while it runs: ``owner`` is its ``host:pid:tag``,
# ``acquired_at`` its last heartbeat, ``expires_at`` when it counts as gone without one.
SENDER_PREFIX = "sender:"


@dataclass(frozen=True)
class SenderRow:
    """One live sender: its row name (the order shares are dealt in) and last heartbeat."""

    name: str
    owner: str
    heartbeat_at: datetime


def register_sender(
    conn: Connection, name: str, owner: str, *, now: datetime, ttl: timedelta
) -> None:
    """Add this sender's row (``name`` starts with ``SENDER_PREFIX`` and is unique to it)."""
    conn.execute(
        locks.insert().values(name=name, owner=owner, acquired_at=now, expires_at=now + ttl)
    )


def sender_heartbeat(conn: Connection, name: str, *, now: datetime, ttl: timedelta) -> bool:
    """Renew this sender's row; False if it is gone (it lapsed and was cleared)."""
    return (
        conn.execute(
            update(locks).where(locks.c.name == name).values(acquired_at=now, expires_at=now + ttl)
        ).rowcount
        == 1
    )


def live_senders(conn: Connection, *, now: datetime) -> list[SenderRow]:
    """Senders whose row has not lapsed and whose process is not known to be dead, by name.

    Rows that lapsed long ago are cleared on the way (a sender that died leaves its row)."""
    conn.execute(
        delete(locks).where(
            locks.c.name.startswith(SENDER_PREFIX, autoescape=True),
            locks.c.expires_at < now - _FORGET_SENDERS_AFTER,
        )
    )
    rows = conn.execute(
        select(locks.c.name, locks.c.owner, locks.c.acquired_at)
        .where(
            locks.c.name.startswith(SENDER_PREFIX, autoescape=True),
            locks.c.expires_at > now,
        )
        .order_by(locks.c.name)
    )
    return [SenderRow(n, o, at) for n, o, at in rows if not owner_is_dead(o)]


_FORGET_SENDERS_AFTER = timedelta(hours=1)
