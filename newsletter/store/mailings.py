"""Mailings that are not digests: confirmation emails, sent through the digests' outbox.

A confirmation mailing is a row of the digests table of kind ``confirmation``, rendered once
with the personal fields as tokens, created together with one pending delivery per address
in one transaction and never added to afterwards (so whoever delivers it sees it whole). It
carries no articles, and the digest lists (status, archive) leave it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select

from newsletter.models import DeliveryState, DigestState, MailingKind
from newsletter.store.schema import deliveries, digests, subscribers

_IN_LIMIT = 500


def create_mailing(
    conn: Connection,
    *,
    kind: MailingKind,
    subject: str,
    html: str,
    text: str,
    token_nonce: str,
    subscriber_ids: Sequence[int],
    now: datetime,
) -> int:
    """Insert a mailing with one pending delivery per subscriber; its id."""
    inserted = conn.execute(
        digests.insert().values(
            kind=kind.value,
            slot=None,
            subject=subject,
            preheader="",
            html=html,
            text=text,
            token_nonce=token_nonce,
            state=DigestState.SENDING.value,
            created_at=now,
        )
    ).inserted_primary_key
    assert inserted is not None
    mailing_id = int(inserted[0])
    if subscriber_ids:
        conn.execute(
            deliveries.insert(),
            [
                {
                    "digest_id": mailing_id,
                    "subscriber_id": subscriber_id,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "updated_at": now,
                }
                for subscriber_id in subscriber_ids
            ],
        )
    return mailing_id


def recent_mail(
    conn: Connection, subscriber_ids: Sequence[int], *, kind: MailingKind, since: datetime
) -> dict[int, tuple[int, datetime]]:
    """Per subscriber, how many mailings of ``kind`` made since ``since`` hold a delivery to
    them, and when the latest was made (subscribers with none are left out)."""
    found: dict[int, tuple[int, datetime]] = {}
    for start in range(0, len(subscriber_ids), _IN_LIMIT):
        chunk = list(subscriber_ids[start : start + _IN_LIMIT])
        rows = conn.execute(
            select(deliveries.c.subscriber_id, func.count(), func.max(digests.c.created_at))
            .join(digests, digests.c.id == deliveries.c.digest_id)
            .where(
                deliveries.c.subscriber_id.in_(chunk),
                digests.c.kind == kind.value,
                digests.c.created_at >= since,
            )
            .group_by(deliveries.c.subscriber_id)
        )
        for subscriber_id, count, latest in rows:
            found[subscriber_id] = (int(count), latest)
    return found


def delivery_states(conn: Connection, mailing_ids: Sequence[int]) -> dict[str, int]:
    """How many deliveries of these mailings are in each state, all together."""
    if not mailing_ids:
        return {}
    rows = conn.execute(
        select(deliveries.c.state, func.count())
        .where(deliveries.c.digest_id.in_(list(mailing_ids)))
        .group_by(deliveries.c.state)
    )
    return {state: int(count) for state, count in rows}


def failed_addresses(
    conn: Connection, mailing_ids: Sequence[int], *, limit: int
) -> list[tuple[str, str]]:
    """``(address, reason)`` of the first ``limit`` failed deliveries of these mailings."""
    if not mailing_ids:
        return []
    rows = conn.execute(
        select(subscribers.c.email, deliveries.c.last_error)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            deliveries.c.digest_id.in_(list(mailing_ids)),
            deliveries.c.state == DeliveryState.FAILED.value,
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [(email, reason or "unknown") for email, reason in rows]
