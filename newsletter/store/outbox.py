"""The outbox: one delivery row per recipient per digest, moved pending -> sending -> sent/failed.

Rows are claimed (``pending -> sending``) and committed before any SMTP transaction starts;
outcomes are committed in batches soon after. A crash can therefore only leave claimed,
not-yet-recorded rows in ``sending``: those are the only possible duplicates (see
:mod:`newsletter.delivery.engine` for the bound). Everything here works on ids and batches,
never on a whole list in memory.

Several senders can share a digest. A claim is a lease: the row names its sender
(``lease_owner``) and when the claim lapses (``lease_expires_at``); the sender renews it while
it works (``renew``), and records outcomes and gives rows back only while the row is still
its own, so a sender that stalled past its lease cannot overwrite what another did since.
Rows whose lease lapsed, or whose sender is known to be gone, go back to pending
(``release_in_flight``). On PostgreSQL the due rows are read ``FOR UPDATE SKIP LOCKED``: two
senders claiming at the same moment take different rows instead of waiting for each other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from newsletter.models import DeliveryState, DigestState, Recipient, SubscriberState
from newsletter.store.locks import lease_owner_is_gone
from newsletter.store.schema import deliveries, digests, subscribers

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


def _lapsed(now: datetime) -> ColumnElement[bool]:
    """A lease that ran out, or none at all (a row an older release left in ``sending``)."""
    return or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at <= now)


def _gone_owners(conn: Connection, digest_id: int, *, now: datetime) -> list[str]:
    """Owners of leases still running whose sender is known to be gone (died on this host)."""
    owners = conn.execute(
        select(deliveries.c.lease_owner)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.SENDING.value,
            deliveries.c.lease_expires_at > now,
        )
        .distinct()
    ).scalars()
    return [owner for owner in owners if owner is not None and lease_owner_is_gone(owner)]


def release_in_flight(conn: Connection, digest_id: int, *, now: datetime) -> int:
    """Rows a sender left in ``sending`` go back to pending (they may be duplicates): those
    whose lease lapsed, and those of a sender known to be gone (a process of this host that
    died, a send of this process that ended). Rows of live senders are left alone."""
    abandoned = _lapsed(now)
    gone = _gone_owners(conn, digest_id, now=now)
    if gone:
        abandoned = or_(abandoned, deliveries.c.lease_owner.in_(gone))
    # Rows a stuck session still locks are left for a later look instead of waited for: the
    # session of a stopped process can outlive its lease (PostgreSQL; SQLite has one writer).
    free = (
        select(deliveries.c.id)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.SENDING.value,
            abandoned,
        )
        .with_for_update(skip_locked=True)
    )
    return conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(free))
        .values(
            state=DeliveryState.PENDING.value,
            updated_at=now,
            next_attempt_at=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    ).rowcount


def has_due_work(conn: Connection, digest_id: int, *, now: datetime) -> bool:
    """Whether a sender would find anything to do in this outbox now: a pending row that is
    due, or a row in ``sending`` that ``release_in_flight`` would give back."""
    due = or_(
        (deliveries.c.state == DeliveryState.PENDING.value)
        & (deliveries.c.next_attempt_at.is_(None) | (deliveries.c.next_attempt_at <= now)),
        (deliveries.c.state == DeliveryState.SENDING.value) & _lapsed(now),
    )
    found = conn.execute(
        select(deliveries.c.id).where(deliveries.c.digest_id == digest_id, due).limit(1)
    ).first()
    return found is not None or bool(_gone_owners(conn, digest_id, now=now))


def renew(
    conn: Connection, digest_id: int, owner: str, *, now: datetime, lease_until: datetime
) -> int:
    """Extend the leases of every row ``owner`` has in ``sending`` in this digest; how many."""
    return conn.execute(
        update(deliveries)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.SENDING.value,
            deliveries.c.lease_owner == owner,
        )
        .values(lease_expires_at=lease_until)
    ).rowcount


def in_flight_elsewhere(
    conn: Connection, digest_id: int, owner: str
) -> tuple[int, datetime | None]:
    """Rows other senders hold in ``sending``, and when the first of their leases lapses."""
    count, earliest = conn.execute(
        select(func.count(), func.min(deliveries.c.lease_expires_at)).where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.SENDING.value,
            or_(deliveries.c.lease_owner.is_(None), deliveries.c.lease_owner != owner),
        )
    ).one()
    return int(count), earliest


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
    lock: bool = False,
) -> list[Recipient]:
    """Pending rows due now with id > ``after_id`` whose subscriber is in the ``audience``
    state (active; pending for a confirmation email), in id order.

    Rows of subscribers who left stay pending here; ``skip_inactive`` settles them. With
    ``lock``, the rows are locked until the transaction ends and rows another transaction
    locked are skipped (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer).
    """
    query = (
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
    if lock:
        query = query.with_for_update(skip_locked=True, of=deliveries)
    rows = conn.execute(query)
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
_OWNER: BindParameter[str] = bindparam("b_owner")
_OURS = (deliveries.c.state == DeliveryState.SENDING.value) & (deliveries.c.lease_owner == _OWNER)
_CLAIM = (
    update(deliveries)
    .where(deliveries.c.id.in_(_IDS), deliveries.c.state == DeliveryState.PENDING.value)
    .values(
        state=DeliveryState.SENDING.value,
        updated_at=_NOW,
        lease_owner=_OWNER,
        lease_expires_at=bindparam("b_until", type_=deliveries.c.lease_expires_at.type),
    )
)
_CLAIMED = select(deliveries.c.id).where(deliveries.c.id.in_(_IDS), _OURS)
_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id.in_(_IDS), _OURS)
    .values(
        state=DeliveryState.PENDING.value,
        updated_at=_NOW,
        lease_owner=None,
        lease_expires_at=None,
    )
)
# Outcomes are written only to rows still ours: a row taken over after our lease lapsed
# belongs to its new sender, whatever we have to say about it.
_SENT_EACH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), _OURS)
    .values(
        state=DeliveryState.SENT.value,
        attempts=bindparam("b_attempts"),
        message_id=bindparam("b_message_id"),
    )
)
_SENT_ALL = (
    update(deliveries)
    .where(
        deliveries.c.id.in_(_IDS),
        deliveries.c.state == DeliveryState.SENT.value,
        deliveries.c.lease_owner == _OWNER,
    )
    .values(
        sent_at=bindparam("b_sent_at", type_=deliveries.c.sent_at.type),
        updated_at=_NOW,
        last_error=None,
        next_attempt_at=None,
        lease_expires_at=None,
    )
)
_OTHER_EACH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), _OURS)
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        next_attempt_at=bindparam("b_next", type_=deliveries.c.next_attempt_at.type),
        updated_at=bindparam("b_updated", type_=deliveries.c.updated_at.type),
        lease_expires_at=None,
    )
)


def claim(
    conn: Connection,
    delivery_ids: Sequence[int],
    *,
    now: datetime,
    owner: str,
    lease_until: datetime,
) -> set[int]:
    """Move rows pending -> sending, leased to ``owner`` until ``lease_until``; returns the
    ids this call claimed (others may have raced us for the rest)."""
    params = {"b_now": now, "b_owner": owner, "b_until": lease_until}
    moved = sum(
        conn.execute(_CLAIM, {"b_ids": chunk, **params}).rowcount for chunk in _chunks(delivery_ids)
    )
    if moved == len(delivery_ids):  # the usual case: the rows were locked or ours alone
        return set(delivery_ids)
    claimed: set[int] = set()
    for chunk in _chunks(delivery_ids):
        claimed.update(conn.execute(_CLAIMED, {"b_ids": chunk, "b_owner": owner}).scalars())
    return claimed


def claim_due(
    conn: Connection,
    digest_id: int,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    after_id: int,
    limit: int,
    due_by: datetime | None = None,
    audience: SubscriberState = SubscriberState.ACTIVE,
) -> list[Recipient]:
    """Claim up to ``limit`` rows due by ``due_by`` (default ``now``) with id > ``after_id``
    (``fetch_due``, locked, then ``claim``): rows another sender is claiming at the same
    moment are skipped, not waited for. Returns the claimed rows in id order."""
    due = fetch_due(
        conn,
        digest_id,
        now=due_by or now,
        after_id=after_id,
        limit=limit,
        audience=audience,
        lock=True,
    )
    if not due:
        return []
    taken = claim(conn, [r.delivery_id for r in due], now=now, owner=owner, lease_until=lease_until)
    return due if len(taken) == len(due) else [r for r in due if r.delivery_id in taken]


def release(conn: Connection, delivery_ids: Sequence[int], *, now: datetime, owner: str) -> int:
    """Claimed rows that were not tried go back to pending, attempts and errors unchanged
    (only rows still leased to ``owner``)."""
    return sum(
        conn.execute(_RELEASE, {"b_ids": chunk, "b_now": now, "b_owner": owner}).rowcount
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


def record(conn: Connection, outcomes: Sequence[Outcome], *, now: datetime, owner: str) -> None:
    """Write many outcomes: executemany for the per-row values, one UPDATE for the shared ones.

    Successes (nearly all rows) carry only id, attempts and Message-ID per row; their
    timestamps are set for the whole batch at once, which keeps this cheap per message.
    Only rows still leased to ``owner`` change (see the module docstring).
    """
    sent = [o for o in outcomes if o.state is DeliveryState.SENT]
    if sent:
        conn.execute(
            _SENT_EACH,
            [
                {
                    "b_id": o.delivery_id,
                    "b_attempts": o.attempts,
                    "b_message_id": o.message_id,
                    "b_owner": owner,
                }
                for o in sent
            ],
        )
        for chunk in _chunks([o.delivery_id for o in sent]):
            conn.execute(
                _SENT_ALL, {"b_ids": chunk, "b_sent_at": now, "b_now": now, "b_owner": owner}
            )
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
                    "b_owner": owner,
                }
                for o in other
            ],
        )


def digest_is_sending(conn: Connection, digest_id: int) -> bool:
    """Whether the digest is still being sent (not paused or finished by another sender)."""
    state = conn.execute(select(digests.c.state).where(digests.c.id == digest_id)).scalar()
    return state == DigestState.SENDING.value


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
