"""Per-feed HTTP validators (ETag, Last-Modified) kept between runs for conditional GETs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from newsletter.store.schema import feed_state


def load_validators(conn: Connection) -> dict[str, tuple[str | None, str | None]]:
    """``url -> (etag, last_modified)`` for every feed fetched before."""
    rows = conn.execute(select(feed_state.c.url, feed_state.c.etag, feed_state.c.last_modified))
    return {row.url: (row.etag, row.last_modified) for row in rows}


MAX_URL_BYTES = 2000  # the key column's length, within every engine's index limits


def save_validators(
    conn: Connection, url: str, *, etag: str | None, last_modified: str | None, now: datetime
) -> None:
    """Keep a feed's validators for its next conditional GET (none for an absurdly long URL)."""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL_BYTES:
        return
    updated = conn.execute(
        feed_state.update()
        .where(feed_state.c.url == url)
        .values(etag=etag, last_modified=last_modified, checked_at=now)
    ).rowcount
    if not updated:
        conn.execute(
            feed_state.insert().values(
                url=url, etag=etag, last_modified=last_modified, checked_at=now
            )
        )


def last_fetched(conn: Connection) -> dict[str, datetime]:
    """``url -> when it was last fetched without an error`` (by a send or a scheduled run)."""
    rows = conn.execute(select(feed_state.c.url, feed_state.c.checked_at))
    return {row.url: row.checked_at for row in rows}
