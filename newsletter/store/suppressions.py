"""Suppression rows: keyed address hashes with a reason and a date (see subscribers/suppression)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from newsletter.store.schema import suppressions

_IN_LIMIT = 500


def get_many(conn: Connection, hashes: Sequence[str]) -> dict[str, tuple[str, datetime]]:
    """``{hash: (reason, suppressed_at)}`` for those of ``hashes`` in the table."""
    found: dict[str, tuple[str, datetime]] = {}
    for start in range(0, len(hashes), _IN_LIMIT):
        chunk = list(hashes[start : start + _IN_LIMIT])
        for row in conn.execute(select(suppressions).where(suppressions.c.address_hash.in_(chunk))):
            found[row.address_hash] = (row.reason, row.suppressed_at)
    return found


def put(conn: Connection, address_hash: str, reason: str, *, now: datetime) -> None:
    """Insert the row, or give an existing one this reason and date."""
    values = {"reason": reason, "suppressed_at": now}
    changed = conn.execute(
        update(suppressions).where(suppressions.c.address_hash == address_hash).values(values)
    ).rowcount
    if changed:
        return
    try:
        with conn.begin_nested():
            conn.execute(suppressions.insert().values(address_hash=address_hash, **values))
    except IntegrityError:  # inserted at the same moment by another process: ours is as good
        conn.execute(
            update(suppressions).where(suppressions.c.address_hash == address_hash).values(values)
        )


def delete_many(conn: Connection, hashes: Sequence[str]) -> int:
    """Delete the rows of ``hashes``; how many there were."""
    if not hashes:
        return 0
    return conn.execute(
        delete(suppressions).where(suppressions.c.address_hash.in_(list(hashes)))
    ).rowcount
