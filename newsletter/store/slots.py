"""Scheduled slots: one ``slot_runs`` row per fire time, claimed by exactly one process.

A row's life:

- **claimed**: inserted with ``owner`` and ``started_at``; the primary key makes a second
  process's insert fail, so only one process runs a slot;
- **to retry**: the attempt failed (SMTP down, another send holding the lock, stopped by a
  signal): ``outcome`` says why, ``finished_at`` stays NULL and a later claim may take it over;
- **done**: ``finished_at`` is set; nobody runs the slot again.

A claim whose owner process died on this host (crash, SIGKILL) may be taken over as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.store.locks import owner_is_dead
from newsletter.store.schema import slot_runs


@dataclass(frozen=True)
class SlotRun:
    slot: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    owner: str

    @property
    def done(self) -> bool:
        return self.finished_at is not None


def claim(conn: Connection, slot: str, owner: str, *, now: datetime) -> str | None:
    """Take the slot. Returns None on success, else why it is not ours to run."""
    try:
        with conn.begin_nested():
            conn.execute(slot_runs.insert().values(slot=slot, started_at=now, owner=owner))
        return None
    except IntegrityError:
        pass
    row = get(conn, slot)
    if row is None:
        return "another process claimed it at the same moment"
    if row.done:
        return f"already done by {row.owner}: {row.outcome}"
    if row.outcome is None and row.owner != owner and not owner_is_dead(row.owner):
        return f"{row.owner} is running it since {row.started_at:%Y-%m-%d %H:%M:%S} UTC"
    taken = conn.execute(
        update(slot_runs)
        .where(
            slot_runs.c.slot == slot,
            slot_runs.c.owner == row.owner,
            slot_runs.c.started_at == row.started_at,
            slot_runs.c.finished_at.is_(None),
        )
        .values(owner=owner, started_at=now, outcome=None)
    ).rowcount
    return None if taken == 1 else "another process took it over at the same moment"


def finish(
    conn: Connection, slot: str, owner: str, *, outcome: str, done: bool, now: datetime
) -> None:
    """Record an attempt's outcome; ``done=False`` leaves the slot open to a retry."""
    conn.execute(
        update(slot_runs)
        .where(slot_runs.c.slot == slot, slot_runs.c.owner == owner)
        .values(outcome=outcome, finished_at=now if done else None)
    )


def get(conn: Connection, slot: str) -> SlotRun | None:
    row = conn.execute(select(slot_runs).where(slot_runs.c.slot == slot)).first()
    return SlotRun(**row._mapping) if row else None


def last_done_slot(conn: Connection) -> str | None:
    """The newest slot that is done (keys sort as ISO timestamps in UTC)."""
    return conn.execute(
        select(func.max(slot_runs.c.slot)).where(slot_runs.c.finished_at.is_not(None))
    ).scalar()


def recent(conn: Connection, *, limit: int = 5) -> list[SlotRun]:
    rows = conn.execute(select(slot_runs).order_by(slot_runs.c.slot.desc()).limit(limit))
    return [SlotRun(**row._mapping) for row in rows]
