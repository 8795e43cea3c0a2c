"""Read-only views of digests for the operator: their articles, failed deliveries, bounces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from newsletter.models import DeliveryState
from newsletter.store.schema import articles, deliveries, digest_articles, subscribers


@dataclass(frozen=True)
class CarriedArticle:
    title: str
    url: str | None
    published: datetime


def digest_articles_of(conn: Connection, digest_id: int) -> list[CarriedArticle]:
    """The articles a digest carries, in their order in it."""
    rows = conn.execute(
        select(articles.c.title, articles.c.url, articles.c.published)
        .join(digest_articles, digest_articles.c.article_id == articles.c.id)
        .where(digest_articles.c.digest_id == digest_id)
        .order_by(digest_articles.c.position)
    )
    return [CarriedArticle(r.title, r.url, r.published) for r in rows]


@dataclass(frozen=True)
class FailedDelivery:
    id: int
    email: str
    reply: str
    attempts: int
    updated_at: datetime


def failed_deliveries(
    conn: Connection, digest_id: int, *, after_id: int = 0, limit: int = 50
) -> list[FailedDelivery]:
    """The failed deliveries of a digest with the SMTP reply, by delivery id after ``after_id``."""
    rows = conn.execute(
        select(
            deliveries.c.id,
            subscribers.c.email,
            deliveries.c.last_error,
            deliveries.c.attempts,
            deliveries.c.updated_at,
        )
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(
            deliveries.c.digest_id == digest_id,
            deliveries.c.state == DeliveryState.FAILED.value,
            deliveries.c.id > after_id,
        )
        .order_by(deliveries.c.id)
        .limit(limit)
    )
    return [
        FailedDelivery(r.id, r.email, r.last_error or "unknown", r.attempts, r.updated_at)
        for r in rows
    ]
