"""Subscriber rows: add, look up, change state, stream in batches; one-time link tokens.

Rows only: which state changes are allowed is :mod:`newsletter.subscribers.lifecycle`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, delete, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from newsletter.models import Subscriber, SubscriberState
from newsletter.store.schema import deliveries, new_public_id, subscribers, used_tokens


def decode_attrs(raw: str | None) -> dict[str, str]:
    return dict(json.loads(raw or "{}"))


def _to_subscriber(row: Row[tuple[object, ...]]) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        state=SubscriberState(row.state),
        attrs=json.loads(row.attrs or "{}"),
        public_id=row.public_id,
    )


def get_by_email(conn: Connection, email: str) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.email == email)).first()
    return _to_subscriber(row) if row else None


def get_by_id(conn: Connection, subscriber_id: int) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    return _to_subscriber(row) if row else None


def get_by_public_id(conn: Connection, public_id: str) -> Subscriber | None:
    row = conn.execute(select(subscribers).where(subscribers.c.public_id == public_id)).first()
    return _to_subscriber(row) if row else None


def get_by_legacy_id(conn: Connection, legacy_id: int) -> Subscriber | None:
    """The subscriber a first-release link named by its row id (kept as ``legacy_id``)."""
    row = conn.execute(select(subscribers).where(subscribers.c.legacy_id == legacy_id)).first()
    return _to_subscriber(row) if row else None


def get_many_by_email(conn: Connection, emails: Sequence[str]) -> list[Subscriber]:
    """The subscribers with these addresses, in id order (unknown addresses are left out)."""
    if not emails:
        return []
    found = conn.execute(
        select(subscribers).where(subscribers.c.email.in_(emails)).order_by(subscribers.c.id)
    )
    return [_to_subscriber(row) for row in found]


def states_of(conn: Connection, emails: Sequence[str]) -> dict[str, str]:
    """The current state of each of ``emails`` already in the store."""
    if not emails:
        return {}
    rows = conn.execute(
        select(subscribers.c.email, subscribers.c.state).where(subscribers.c.email.in_(emails))
    )
    return {row.email: row.state for row in rows}


@dataclass(frozen=True)
class SubscriberRecord:
    """A whole subscriber row as an export carries it: state, dates and link ids included."""

    email: str
    name: str
    state: SubscriberState
    created_at: datetime
    attrs: dict[str, str] = field(default_factory=dict)
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    public_id: str | None = None  # None: a fresh one
    legacy_id: int | None = None


def insert_many(
    conn: Connection,
    rows: Iterable[tuple[str, str, dict[str, str]]],
    *,
    state: SubscriberState,
    now: datetime,
) -> int:
    """Insert new subscribers ``(email, name, attrs)``; the caller has checked they are new."""
    return insert_records(
        conn,
        [
            SubscriberRecord(
                email,
                name,
                state,
                now,
                attrs,
                confirmed_at=now if state is SubscriberState.ACTIVE else None,
                unsubscribed_at=now if state is SubscriberState.UNSUBSCRIBED else None,
            )
            for email, name, attrs in rows
        ],
        now=now,
    )


def insert_records(conn: Connection, records: Sequence[SubscriberRecord], *, now: datetime) -> int:
    """Insert whole records; the caller has checked the addresses and link ids are free."""
    values = [
        {
            "email": r.email,
            "name": r.name,
            "attrs": json.dumps(r.attrs, ensure_ascii=False, sort_keys=True),
            "state": r.state.value,
            "created_at": r.created_at,
            "updated_at": now,
            "confirmed_at": r.confirmed_at,
            "unsubscribed_at": r.unsubscribed_at,
            "public_id": r.public_id or new_public_id(),
            "legacy_id": r.legacy_id,
        }
        for r in records
    ]
    if values:
        conn.execute(subscribers.insert(), values)
    return len(values)


def taken_public_ids(conn: Connection, public_ids: Sequence[str]) -> set[str]:
    """Those of ``public_ids`` that already name a subscriber here."""
    if not public_ids:
        return set()
    found = conn.execute(
        select(subscribers.c.public_id).where(subscribers.c.public_id.in_(public_ids))
    )
    return set(found.scalars())


def taken_legacy_ids(conn: Connection, legacy_ids: Sequence[int]) -> set[int]:
    """Those of ``legacy_ids`` that already name a subscriber here."""
    if not legacy_ids:
        return set()
    found = conn.execute(
        select(subscribers.c.legacy_id).where(subscribers.c.legacy_id.in_(legacy_ids))
    )
    return {int(value) for value in found.scalars()}


def set_state(
    conn: Connection,
    subscriber_id: int,
    state: SubscriberState,
    *,
    now: datetime,
    only_from: Sequence[SubscriberState] | None = None,
    reason: str | None = None,
) -> bool:
    """Move a subscriber to ``state`` (with ``reason``, or none); with ``only_from``, only from
    those states. True if moved. The rules are in :mod:`newsletter.subscribers.lifecycle`."""
    values: dict[str, object] = {"state": state.value, "updated_at": now, "state_reason": reason}
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
            state_reason=None,
            updated_at=now,
        )
    )


def iter_all(
    conn: Connection, *, batch_size: int = 1000, state: SubscriberState | None = None
) -> Iterator[Row[tuple[object, ...]]]:
    """Every subscriber row (or those in ``state``), in id order, fetched in batches."""
    last_id = 0
    while True:
        stmt = select(subscribers).where(subscribers.c.id > last_id)
        if state is not None:
            stmt = stmt.where(subscribers.c.state == state.value)
        batch = conn.execute(stmt.order_by(subscribers.c.id).limit(batch_size)).all()
        if not batch:
            return
        yield from batch
        last_id = batch[-1].id


def failed_with_codes(
    conn: Connection, digest_id: int, codes: Sequence[str], *, state: SubscriberState
) -> list[tuple[int, str]]:
    """``(subscriber id, SMTP reply)`` of the subscribers in ``state`` whose delivery of this
    digest failed with a reply carrying one of the enhanced status ``codes``."""
    found = conn.execute(
        select(deliveries.c.subscriber_id, deliveries.c.last_error)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == "failed",
            or_(*(deliveries.c.last_error.like(f"5__ {code} %") for code in codes)),
            subscribers.c.state == state.value,
        )
        .order_by(deliveries.c.subscriber_id)
    )
    return [(subscriber_id, error or "") for subscriber_id, error in found]


def row_by_email(conn: Connection, email: str) -> Row[tuple[object, ...]] | None:
    """The whole stored row of one address (every column), for ``subscribers show``."""
    return conn.execute(select(subscribers).where(subscribers.c.email == email)).first()


def delete_subscriber(conn: Connection, subscriber_id: int) -> bool:
    """Delete the row; its deliveries must be gone first (``subscribers forget``)."""
    return conn.execute(delete(subscribers).where(subscribers.c.id == subscriber_id)).rowcount == 1


def count_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(subscribers.c.state, func.count()).group_by(subscribers.c.state))
    return {state: count for state, count in rows}


def claim_token(conn: Connection, token_id: str, *, now: datetime) -> bool:
    """Record a one-time link token as used; False if it was used before (a replay)."""
    try:
        with conn.begin_nested():
            conn.execute(used_tokens.insert().values(token_id=token_id, used_at=now))
    except IntegrityError:
        return False
    return True


def token_was_used(conn: Connection, token_id: str) -> bool:
    found = conn.execute(select(used_tokens.c.token_id).where(used_tokens.c.token_id == token_id))
    return found.first() is not None


def forget_tokens_used_before(conn: Connection, cutoff: datetime) -> int:
    """Drop used-token rows older than ``cutoff`` (their tokens have expired anyway)."""
    return conn.execute(delete(used_tokens).where(used_tokens.c.used_at < cutoff)).rowcount
