"""Subscriber rows: add, look up, change state, stream in batches."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select, update
from sqlalchemy.engine import Row

from newsletter.models import Subscriber, SubscriberState
from newsletter.store.schema import subscribers


def decode_attrs(raw: str | None) -> dict[str, str]:
    return dict(json.loads(raw or "{}"))


def _to_subscriber(row: Row[tuple[object, ...]]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        state=SubscriberState(row.state),
        attrs=json.loads(row.attrs or "{}"),
    )


def get_by_email(conn: Connection, email: str) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
    return _to_subscriber(row) if row else None


def get_by_id(conn: Connection, subscriber_id: int) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    return _to_subscriber(row) if row else None


def states_of(conn: Connection, emails: Sequence[str]) -> dict[str, str]:
    """The current state of each of ``emails`` already in the store."""
    if not emails:
        return {}
    rows = conn.execute(
        select(subscribers.c.email, subscribers.c.state).where(subscribers.c.email.in_(emails))
    )
    return {row.email: row.state for row in rows}


def insert_many(
    conn: Connection,
    rows: Iterable[tuple[str, str, dict[str, str]]],
    *,
    state: SubscriberState,
    now: datetime,
) -> int:
    """Insert new subscribers ``(email, name, attrs)``; the caller has checked they are new."""
    values = [
        {
            "email": email,
            "name": name,
            "attrs": json.dumps(attrs, ensure_ascii=False, sort_keys=True),
            "state": state.value,
            "created_at": now,
            "updated_at": now,
            "confirmed_at": now if state is SubscriberState.ACTIVE else None,
        }
        for email, name, attrs in rows
    ]
    if values:
        conn.execute(subscribers.insert(), values)
    return len(values)


def set_state(
    conn: Connection,
    subscriber_id: int,
    state: SubscriberState,
    *,
    now: datetime,
    only_from: Sequence[SubscriberState] | None = None,
) -> bool:
    """Move a subscriber to ``state``; with ``only_from``, only from those states. True if moved."""
    values: dict[str, object] = {"state": state.value, "updated_at": now}
    if state is SubscriberState.UNSUBSCRIBED:
        values["unsubscribed_at"] = now
    if state is SubscriberState.ACTIVE:
        values["confirmed_at"] = now
    stmt = update(subscribers).where(subscribers.c.id == subscriber_id)
    if only_from is not None:
        stmt = stmt.where(subscribers.c.state.in_([s.value for s in only_from]))
    return conn.execute(stmt.values(**values)).rowcount == 1


def update_pending(
    conn: Connection, subscriber_id: int, *, name: str, attrs: dict[str, str], now: datetime
) -> None:
    """Refresh the details of an address that asks to (re)subscribe and awaits confirmation."""
    conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id)
        .values(
            name=name,
            attrs=json.dumps(attrs, ensure_ascii=False, sort_keys=True),
            state=SubscriberState.PENDING.value,
            updated_at=now,
        )
    )


def iter_all(conn: Connection, *, batch_size: int = 1000) -> Iterator[Row[tuple[object, ...]]]:
    """Every subscriber row, in id order, fetched in batches (keyset pagination)."""
    last_id = 0
    while True:
        batch = conn.execute(
            select(subscribers)
            .where(subscribers.c.id > last_id)
            .order_by(subscribers.c.id)
            .limit(batch_size)
        ).all()
        if not batch:
            return
        yield from batch
        last_id = batch[-1].id


def count_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(subscribers.c.state, func.count()).group_by(subscribers.c.state))
    return {state: count for state, count in rows}
