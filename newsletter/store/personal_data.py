"""One person's rows beyond the subscriber row: their deliveries, for access and erasure."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select

from newsletter.store.schema import deliveries, digests


def deliveries_of(conn: Connection, subscriber_id: int) -> list[dict[str, Any]]:
    """Every delivery to one subscriber, oldest first, with its mailing's kind and subject."""
    rows = conn.execute(
        select(
            deliveries.c.digest_id.label("mailing"),
            digests.c.kind,
            digests.c.subject,
            deliveries.c.state,
            deliveries.c.attempts,
            deliveries.c.last_error,
            deliveries.c.message_id,
            deliveries.c.updated_at,
            deliveries.c.sent_at,
        )
        .join(digests, digests.c.id == deliveries.c.digest_id)
        .where(deliveries.c.subscriber_id == subscriber_id)
        .order_by(deliveries.c.id)
    )
    return [dict(row._mapping) for row in rows]


def delete_deliveries_of(conn: Connection, subscriber_id: int) -> int:
    """Delete every delivery row of one subscriber (their address may be in its SMTP reply)."""
    return conn.execute(
        delete(deliveries).where(deliveries.c.subscriber_id == subscriber_id)
    ).rowcount
