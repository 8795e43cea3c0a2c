"""Pages of subscribers for the operator: search, filter by state, keyset pagination.

Newest first, by id. A page starts after (or before) the id a link carries, never at an
offset, so page 2,000 of a list of 100,000 costs what page 1 costs: the query walks the
primary key (or the ``(state, id)`` index when filtered) from that id and stops at the page
size. ``bench/admin_subscribers.py`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, or_, select
from sqlalchemy.sql import Select

from newsletter.models import SubscriberState
from newsletter.store.schema import subscribers

MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class SubscriberLine:
    id: int
    email: str
    name: str
    state: SubscriberState
    created_at: datetime


def _like_pattern(query: str) -> str:
    """``%query%`` with the LIKE wildcards in ``query`` matched literally (escape ``\\``)."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(query: str, state: SubscriberState | None) -> Select[tuple[object, ...]]:
    stmt = select(
        subscribers.c.id,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.state,
        subscribers.c.created_at,
    )
    if state is not None:
        stmt = stmt.where(subscribers.c.state == state.value)
    query = query.strip()[:MAX_QUERY_CHARS]
    if query:
        pattern = _like_pattern(query.lower())
        stmt = stmt.where(
            or_(
                subscribers.c.email.like(pattern, escape="\\"),
                func.lower(subscribers.c.name).like(pattern, escape="\\"),
            )
        )
    return stmt


def subscriber_page(
    conn: Connection,
    *,
    query: str = "",
    state: SubscriberState | None = None,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> tuple[list[SubscriberLine], bool]:
    """One page, newest first, and whether there is more beyond it in the direction walked.

    ``before_id``: the page of older subscribers (ids below it); ``after_id``: the page of
    newer ones (ids above it), for a "previous page" link. Neither: the newest page.
    """
    stmt = _filtered(query, state)
    if after_id is not None:
        stmt = stmt.where(subscribers.c.id > after_id).order_by(subscribers.c.id.asc())
    else:
        if before_id is not None:
            stmt = stmt.where(subscribers.c.id < before_id)
        stmt = stmt.order_by(subscribers.c.id.desc())
    found = conn.execute(stmt.limit(limit + 1)).all()
    more = len(found) > limit
    rows = list(found[:limit])
    if after_id is not None:
        rows.reverse()
    lines = [
        SubscriberLine(r.id, r.email, r.name, SubscriberState(r.state), r.created_at) for r in rows
    ]
    return lines, more
