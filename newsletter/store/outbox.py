"""The outbox: one delivery row per recipient per digest, moved pending -> sending -> sent/failed.

Rows are claimed in small chunks (``pending -> sending``) and committed before any SMTP
transaction starts; results are committed in batches right after. A crash can therefore only
leave the claimed, not-yet-recorded rows in ``sending``: those are the only possible duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, func, insert, literal, select, update

from newsletter.models import DeliveryState, Recipient, SubscriberState
from newsletter.store.schema import deliveries, subscribers


def create_outbox(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """One pending delivery per active subscriber, in one INSERT ... SELECT (no rows in memory)."""
    source = select(
        literal(digest_id),
        subscribers.c.id,
        literal(DeliveryState.PENDING.value),
        literal(0),
        literal(now, deliveries.c.updated_at.type),
    ).where(subscribers.c.state == SubscriberState.ACTIVE.value)
    result = conn.execute(
        insert(deliveries).from_select(
            ["digest_id", "subscriber_id", "state", "attempts", "updated_at"], source
        )
    )
    return result.rowcount


def release_in_flight(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Rows left in ``sending`` by a crashed run go back to pending (they may be duplicates)."""
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id, deliveries.c.state == DeliveryState.SENDING.value
        )
        .values(state=DeliveryState.PENDING.value, updated_at=now, next_attempt_at=None)
    ).rowcount


def skip_inactive(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Pending rows whose subscriber left (unsubscribed, bounced) since the outbox was made."""
    inactive = select(subscribers.c.id).where(subscribers.c.state != SubscriberState.ACTIVE.value)
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.PENDING.value,
            deliveries.c.subscriber_id.in_(inactive),
        )
        .values(
            state=DeliveryState.FAILED.value,
            last_error="skipped: the subscriber left before this digest reached them",
            updated_at=now,
        )
    ).rowcount


def fetch_due(
    conn: Connection, digest_id: int, *, now: datetime, after_id: int, limit: int
) -> list[Recipient]:
    """Pending rows due now with id > ``after_id``, joined with their subscriber, in id order."""
    rows = conn.execute(
        select(
            deliveries.c.id,
            deliveries.c.subscriber_id,
            deliveries.c.attempts,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.attrs,
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.PENDING.value,
            deliveries.c.id > after_id,
            (deliveries.c.next_attempt_at.is_(None)) | (deliveries.c.next_attempt_at <= now),
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [
        Recipient(
            delivery_id=row.id,
            subscriber_id=row.subscriber_id,
            email=row.email,
            name=row.name,
            attrs=json.loads(row.attrs or "{}"),
            attempts=row.attempts,
        )
        for row in rows
    ]


def claim(conn: Connection, delivery_ids: Sequence[int], *, now: datetime) -> set[int]:
    """Move rows pending -> sending; returns the ids this call claimed (others raced us)."""
    conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(delivery_ids), deliveries.c.state == DeliveryState.PENDING.value)
        .values(state=DeliveryState.SENDING.value, updated_at=now)
    )
    claimed = conn.execute(
        select(deliveries.c.id).where(
            deliveries.c.id.in_(delivery_ids), deliveries.c.state == DeliveryState.SENDING.value
        )
    ).scalars()
    return set(claimed)


@dataclass(frozen=True)
class Outcome:
    """What happened to one delivery's SMTP transaction."""

    delivery_id: int
    state: DeliveryState  # SENT, FAILED, or PENDING (retry later)
    attempts: int
    error: str | None = None
    message_id: str | None = None
    next_attempt_at: datetime | None = None


def record(conn: Connection, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Write many outcomes in one statement (executemany)."""
    if not outcomes:
        return
    stmt = (
        update(deliveries)
        .where(deliveries.c.id == bindparam("b_id"))
        .values(
            state=bindparam("b_state"),
            attempts=bindparam("b_attempts"),
            last_error=bindparam("b_error"),
            message_id=bindparam("b_message_id"),
            next_attempt_at=bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
            sent_at=bindparam("b_sent_at", type_=deliveries.c.sent_at.type),
            updated_at=now,
        )
    )
    conn.execute(
        stmt,
        [
            {
                "b_id": o.delivery_id,
                "b_state": o.state.value,
                "b_attempts": o.attempts,
                "b_error": o.error,
                "b_message_id": o.message_id,
                "b_next": o.next_attempt_at,
                "b_sent_at": now if o.state is DeliveryState.SENT else None,
            }
            for o in outcomes
        ],
    )


def counts(conn: Connection, digest_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(deliveries.c.state, func.count())
        .where(deliveries.c.digest_id == digest_id)
        .group_by(deliveries.c.state)
    )
    return {state: n for state, n in rows}


def next_retry_at(conn: Connection, digest_id: int) -> datetime | None:
    """When the earliest pending row becomes due (None: no pending rows are left)."""
    row = conn.execute(
        select(func.count(), func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.digest_id == digest_id, deliveries.c.state == DeliveryState.PENDING.value
        )
    ).one()
    if not row[0]:
        return None
    return row[1] or datetime.min.replace(tzinfo=UTC)


def has_pending(conn: Connection, digest_id: int) -> bool:
    return (
        conn.execute(
            select(deliveries.c.id)
            .where(
                deliveries.c.digest_id == digest_id,
                deliveries.c.state == DeliveryState.PENDING.value,
            )
            .limit(1)
        ).first()
        is not None
    )
