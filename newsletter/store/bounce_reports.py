"""Bounce-report rows, and the lookups that find the delivery a report names.

One row per message read from the bounce mailbox, under its mailbox key (the unique key that
makes recording idempotent); see ``schema.bounce_reports``. Which delivery a report names is
decided in :mod:`newsletter.bounces.matching`; the queries it needs are here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from newsletter.models import DeliveryState
from newsletter.store.schema import bounce_reports, deliveries, subscribers

_MAX_KEY_CHARS = 1000  # the column's size; a longer key is stored as its hash
_IN_LIMIT = 500


class DeliveryRef(NamedTuple):
    """The mailing and the subscriber of one delivery."""

    digest_id: int
    subscriber_id: int


@dataclass(frozen=True)
class BounceReport:
    """One processed bounce-mailbox message, as recorded."""

    message_key: str
    outcome: str  # hard, soft, refused, complaint, ignored, unmatched
    delivery: DeliveryRef | None = None
    matched_by: str | None = None  # verp, message-id, recipient
    status: str | None = None
    diagnostic: str | None = None


def stored_key(message_key: str) -> str:
    """The key as the table holds it: itself, or a hash when it is too long for the column."""
    if len(message_key) <= _MAX_KEY_CHARS:
        return message_key
    return "sha256:" + hashlib.sha256(message_key.encode("utf-8", "surrogatepass")).hexdigest()


def is_recorded(conn: Connection, message_key: str) -> bool:
    """Whether a message with this mailbox key was recorded already."""
    key = stored_key(message_key)
    found = conn.execute(
        select(bounce_reports.c.message_key).where(bounce_reports.c.message_key == key)
    )
    return found.first() is not None


def record(conn: Connection, report: BounceReport, *, now: datetime) -> bool:
    """Insert the report; False if its key is recorded already (by another process just now)."""
    delivery = report.delivery
    try:
        with conn.begin_nested():
            conn.execute(
                bounce_reports.insert().values(
                    message_key=stored_key(report.message_key),
                    processed_at=now,
                    outcome=report.outcome,
                    digest_id=delivery.digest_id if delivery else None,
                    subscriber_id=delivery.subscriber_id if delivery else None,
                    matched_by=report.matched_by,
                    status=report.status,
                    diagnostic=report.diagnostic,
                )
            )
    except IntegrityError:
        return False
    return True


def soft_mailings_since(conn: Connection, subscriber_id: int, *, since: datetime) -> int:
    """How many different mailings to this subscriber soft-bounced in reports since ``since``
    (a delay notice and the final failure of one message count once)."""
    return int(
        conn.execute(
            select(func.count(func.distinct(bounce_reports.c.digest_id))).where(
                bounce_reports.c.subscriber_id == subscriber_id,
                bounce_reports.c.outcome == "soft",
                bounce_reports.c.processed_at >= since,
            )
        ).scalar_one()
    )


def delivery_to_public_id(conn: Connection, digest_id: int, public_id: str) -> DeliveryRef | None:
    """The delivery of mailing ``digest_id`` to the subscriber with ``public_id``, if any."""
    row = conn.execute(
        select(deliveries.c.digest_id, deliveries.c.subscriber_id)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(deliveries.c.digest_id == digest_id, subscribers.c.public_id == public_id)
    ).first()
    return DeliveryRef(row.digest_id, row.subscriber_id) if row else None


def delivery_with_message_id(
    conn: Connection, digest_id: int, delivery_id: int, message_id: str
) -> DeliveryRef | None:
    """Delivery ``delivery_id`` of mailing ``digest_id``, if it was sent with ``message_id``."""
    row = conn.execute(
        select(deliveries.c.digest_id, deliveries.c.subscriber_id).where(
            deliveries.c.id == delivery_id,
            deliveries.c.digest_id == digest_id,
            deliveries.c.message_id == message_id,
        )
    ).first()
    return DeliveryRef(row.digest_id, row.subscriber_id) if row else None


def last_sent_to(conn: Connection, email: str, *, since: datetime) -> DeliveryRef | None:
    """The latest delivery to the subscriber with address ``email`` (normalized) that the
    server accepted at or after ``since``, if any."""
    row = conn.execute(
        select(deliveries.c.digest_id, deliveries.c.subscriber_id)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            subscribers.c.email == email,
            deliveries.c.state == DeliveryState.SENT.value,
            deliveries.c.sent_at >= since,
        )
        .order_by(deliveries.c.sent_at.desc(), deliveries.c.id.desc())
        .limit(1)
    ).first()
    return DeliveryRef(row.digest_id, row.subscriber_id) if row else None


def outcomes_per_digest(conn: Connection, digest_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Per mailing, how many of its recipients each outcome reached (each person once)."""
    found: dict[int, dict[str, int]] = {digest_id: {} for digest_id in digest_ids}
    for start in range(0, len(digest_ids), _IN_LIMIT):
        chunk = list(digest_ids[start : start + _IN_LIMIT])
        rows = conn.execute(
            select(
                bounce_reports.c.digest_id,
                bounce_reports.c.outcome,
                func.count(func.distinct(bounce_reports.c.subscriber_id)),
            )
            .where(bounce_reports.c.digest_id.in_(chunk))
            .group_by(bounce_reports.c.digest_id, bounce_reports.c.outcome)
        )
        for digest_id, outcome, count in rows:
            found[digest_id][outcome] = count
    return found


def refused_at_smtp_time(
    conn: Connection, digest_ids: Sequence[int], codes: Sequence[str]
) -> dict[int, int]:
    """Per mailing, its deliveries the server refused at once with one of the enhanced
    status ``codes`` (the reply is stored as ``550 5.1.1 ...``)."""
    found = dict.fromkeys(digest_ids, 0)
    for start in range(0, len(digest_ids), _IN_LIMIT):
        chunk = list(digest_ids[start : start + _IN_LIMIT])
        rows = conn.execute(
            select(deliveries.c.digest_id, func.count())
            .where(
                deliveries.c.digest_id.in_(chunk),
                deliveries.c.state == DeliveryState.FAILED.value,
                or_(*(deliveries.c.last_error.like(f"5__ {code} %") for code in codes)),
            )
            .group_by(deliveries.c.digest_id)
        )
        for digest_id, count in rows:
            found[digest_id] = count
    return found


def reports_of(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """Every bounce report matched to one subscriber, oldest first (``subscribers show``)."""
    rows = conn.execute(
        select(
            bounce_reports.c.processed_at,
            bounce_reports.c.outcome,
            bounce_reports.c.digest_id.label("mailing"),
            bounce_reports.c.matched_by,
            bounce_reports.c.status,
            bounce_reports.c.diagnostic,
        )
        .where(bounce_reports.c.subscriber_id == subscriber_id)
        .order_by(bounce_reports.c.processed_at, bounce_reports.c.message_key)
    )
    return [dict(row._mapping) for row in rows]


def delete_reports_of(conn: Connection, subscriber_id: int) -> int:
    """Delete one subscriber's reports (the server's words there may quote the address)."""
    return conn.execute(
        delete(bounce_reports).where(bounce_reports.c.subscriber_id == subscriber_id)
    ).rowcount
