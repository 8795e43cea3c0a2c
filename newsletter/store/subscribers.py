"""Subscriber rows: add, look up, change state, stream in batches; one-time link tokens."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from newsletter.models import Subscriber, SubscriberState
from newsletter.store.schema import deliveries, subscribers, used_tokens


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
            "unsubscribed_at": now if state is SubscriberState.UNSUBSCRIBED else None,
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


# Permanent replies that say the mailbox itself is gone (RFC 3463 enhanced status codes):
# 5.1.1 bad mailbox, 5.1.10 null MX, 5.2.1 mailbox disabled. Other 5xx (policy, content,
# our own reputation) fail the delivery but say nothing about the address.
HARD_BOUNCE_CODES = ("5.1.1", "5.1.10", "5.2.1")


def mark_hard_bounces(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Subscribers whose delivery of this digest got a hard bounce become ``bounced``."""
    bounced_deliveries = select(deliveries.c.subscriber_id).where(
        deliveries.c.digest_id == digest_id,
        deliveries.c.state == "failed",
        or_(*(deliveries.c.last_error.like(f"5__ {code} %") for code in HARD_BOUNCE_CODES)),
    )
    return conn.execute(
        update(subscribers)
        .where(
            subscribers.c.id.in_(bounced_deliveries),
            subscribers.c.state == SubscriberState.ACTIVE.value,
        )
        .values(state=SubscriberState.BOUNCED.value, updated_at=now)
    ).rowcount


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
