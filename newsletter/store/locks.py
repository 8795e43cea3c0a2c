"""A lock row in the database, so two processes on one database never send at once."""

from __future__ import annotations

import os
import socket
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
    if host != socket.gethostname() or not pid.isdigit():
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
