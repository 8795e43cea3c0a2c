"""The outbox: one delivery row per recipient per digest, moved pending -> sending -> sent/failed.

Rows are claimed (``pending -> sending``) and committed before any SMTP transaction starts;
outcomes are committed in batches soon after. A crash can therefore only leave claimed,
not-yet-recorded rows in ``sending``: those are the only possible duplicates (see
:mod:`newsletter.delivery.engine` for the bound). Everything here works on ids and batches,
never on a whole list in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, func, insert, literal, select, update
from sqlalchemy.sql.elements import BindParameter

from newsletter.models import DeliveryState, Recipient, SubscriberState
from newsletter.store.schema import deliveries, subscribers

_IN_LIMIT = 500


def create_outbox(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """One pending delivery per active subscriber, in one INSERT ... SELECT (no rows in memory)."""
    source = select(
        literal(digest_id),
        subscribers.c.id,
        literal(DeliveryState.PENDING.value),
        literal(0),
        literal(now, deliveries.c.updated_at.type),
    ).where(subscribers.c.state == SubscriberState.ACTIVE.value)
    conn.execute(
        insert(deliveries).from_select(
            ["digest_id", "subscriber_id", "state", "attempts", "updated_at"], source
        )
    )
    # Counted, not the INSERT's rowcount: psycopg reports -1 for an INSERT ... SELECT.
    counted = select(func.count()).where(deliveries.c.digest_id == digest_id)
    return int(conn.execute(counted).scalar_one())


def release_in_flight(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Rows left in ``sending`` by a crashed run go back to pending (they may be duplicates)."""
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id, deliveries.c.state == DeliveryState.SENDING.value
        )
        .values(state=DeliveryState.PENDING.value, updated_at=now, next_attempt_at=None)
    ).rowcount


def requeue_failed(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Failed deliveries of active subscribers go back to pending, attempts reset; how many.

    One UPDATE on rows still ``failed``: a row moves once however many resends run at the same
    time (the others find it pending or sent), and a resend of rows already resent that were
    delivered finds nothing.
    """
    active = select(subscribers.c.id).where(subscribers.c.state == SubscriberState.ACTIVE.value)
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.FAILED.value,
            deliveries.c.subscriber_id.in_(active),
        )
        .values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=None, updated_at=now)
    ).rowcount


_SKIPPED = {
    SubscriberState.ACTIVE: "skipped: the subscriber left before this digest reached them",
    SubscriberState.PENDING: (
        "skipped: the address was confirmed or left before this confirmation email reached it"
    ),
}


def skip_inactive(
    conn: Connection,
    digest_id: int,
    *,
    now: datetime,
    audience: SubscriberState = SubscriberState.ACTIVE,
) -> int:
    """Pending rows whose subscriber is no longer in the ``audience`` state (left, or for a
    confirmation email: confirmed or left) since the outbox was made."""
    inactive = select(subscribers.c.id).where(subscribers.c.state != audience.value)
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.PENDING.value,
            deliveries.c.subscriber_id.in_(inactive),
        )
        .values(
            state=DeliveryState.FAILED.value,
            last_error=_SKIPPED[audience],
            updated_at=now,
        )
    ).rowcount


def fetch_due(
    conn: Connection,
    digest_id: int,
    *,
    now: datetime,
    after_id: int,
    limit: int,
    audience: SubscriberState = SubscriberState.ACTIVE,
) -> list[Recipient]:
    """Pending rows due now with id > ``after_id`` whose subscriber is in the ``audience``
    state (active; pending for a confirmation email), in id order.

    Rows of subscribers who left stay pending here; ``skip_inactive`` settles them.
    """
    rows = conn.execute(
        select(
            deliveries.c.id,
            deliveries.c.subscriber_id,
            deliveries.c.attempts,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.attrs,
            subscribers.c.public_id,
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.PENDING.value,
            deliveries.c.id > after_id,
            (deliveries.c.next_attempt_at.is_(None)) | (deliveries.c.next_attempt_at <= now),
            subscribers.c.state == audience.value,
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [
        Recipient(
            delivery_id=delivery_id,
            subscriber_id=subscriber_id,
            email=email,
            name=name,
            attrs=json.loads(attrs) if attrs and attrs != "{}" else {},
            attempts=attempts,
            public_id=public_id,
        )
        for delivery_id, subscriber_id, attempts, email, name, attrs, public_id in rows
    ]


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """Slices small enough for an ``IN (...)`` on every backend (SQLite caps bound values)."""
    for start in range(0, len(ids), _IN_LIMIT):
        yield list(ids[start : start + _IN_LIMIT])


# The hot statements are built once: per call only their parameters change.
_IDS: BindParameter[list[int]] = bindparam("b_ids", expanding=True)
_NOW = bindparam("b_now", type_=deliveries.c.updated_at.type)
_CLAIM = (
    update(deliveries)
    .where(deliveries.c.id.in_(_IDS), deliveries.c.state == DeliveryState.PENDING.value)
    .values(state=DeliveryState.SENDING.value, updated_at=_NOW)
)
_CLAIMED = select(deliveries.c.id).where(
    deliveries.c.id.in_(_IDS),
    deliveries.c.state == DeliveryState.SENDING.value,
    deliveries.c.updated_at == _NOW,
)
_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id.in_(_IDS), deliveries.c.state == DeliveryState.SENDING.value)
    .values(state=DeliveryState.PENDING.value, updated_at=_NOW)
)
_SENT_EACH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        state=DeliveryState.SENT.value,
        attempts=bindparam("b_attempts"),
        message_id=bindparam("b_message_id"),
    )
)
_SENT_ALL = (
    update(deliveries)
    .where(deliveries.c.id.in_(_IDS))
    .values(
        sent_at=bindparam("b_sent_at", type_=deliveries.c.sent_at.type),
        updated_at=_NOW,
        last_error=None,
        next_attempt_at=None,
    )
)
_OTHER_EACH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        next_attempt_at=bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
        updated_at=bindparam("b_updated", type_=deliveries.c.updated_at.type),
    )
)


def claim(conn: Connection, delivery_ids: Sequence[int], *, now: datetime) -> set[int]:
    """Move rows pending -> sending; returns the ids this call claimed (others raced us)."""
    moved = sum(
        conn.execute(_CLAIM, {"b_ids": chunk, "b_now": now}).rowcount
        for chunk in _chunks(delivery_ids)
    )
    if moved == len(delivery_ids):  # the usual case: the send lock keeps others away
        return set(delivery_ids)
    claimed: set[int] = set()
    for chunk in _chunks(delivery_ids):
        claimed.update(conn.execute(_CLAIMED, {"b_ids": chunk, "b_now": now}).scalars())
    return claimed


def release(conn: Connection, delivery_ids: Sequence[int], *, now: datetime) -> int:
    """Claimed rows that were not tried go back to pending, attempts and errors unchanged."""
    return sum(
        conn.execute(_RELEASE, {"b_ids": chunk, "b_now": now}).rowcount
        for chunk in _chunks(delivery_ids)
    )


class Outcome(NamedTuple):
    """What happened to one delivery's SMTP transaction."""

    delivery_id: int
    state: DeliveryState  # SENT, FAILED, or PENDING (retry later)
    attempts: int
    error: str | None = None
    message_id: str | None = None
    next_attempt_at: datetime | None = None


def record(conn: Connection, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Write many outcomes: executemany for the per-row values, one UPDATE for the shared ones.

    Successes (nearly all rows) carry only id, attempts and Message-ID per row; their
    timestamps are set for the whole batch at once, which keeps this cheap per message.
    """
    sent = [o for o in outcomes if o.state is DeliveryState.SENT]
    if sent:
        conn.execute(
            _SENT_EACH,
            [
                {"b_id": o.delivery_id, "b_attempts": o.attempts, "b_message_id": o.message_id}
                for o in sent
            ],
        )
        for chunk in _chunks([o.delivery_id for o in sent]):
            conn.execute(_SENT_ALL, {"b_ids": chunk, "b_sent_at": now, "b_now": now})
    other = [o for o in outcomes if o.state is not DeliveryState.SENT]
    if other:
        conn.execute(
            _OTHER_EACH,
            [
                {
                    "b_id": o.delivery_id,
                    "b_state": o.state.value,
                    "b_attempts": o.attempts,
                    "b_error": o.error,
                    "b_next": o.next_attempt_at,
                    "b_updated": now,
                }
                for o in other
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
    pending, scheduled, earliest = conn.execute(
        select(
            func.count(),
            func.count(deliveries.c.next_attempt_at),
            func.min(deliveries.c.next_attempt_at),
        ).where(
            deliveries.c.digest_id == digest_id, deliveries.c.state == DeliveryState.PENDING.value
        )
    ).one()
    if not pending:
        return None
    if scheduled < pending or earliest is None:  # some row has no retry time: due now
        return datetime.min.replace(tzinfo=UTC)
    when: datetime = earliest
    return when
