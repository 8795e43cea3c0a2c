"""Queries about articles and the digests that carried them, for explaining an article's fate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select

from newsletter.store.schema import articles, digest_articles, stored_text

_CHUNK = 500  # keys per IN (...) query, well under every database's parameter limit


def carrying_digests(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    """For each of ``keys`` a digest carried, the id of that digest."""
    carried: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start : start + _CHUNK])
        rows = conn.execute(
            select(articles.c.key, digest_articles.c.digest_id)
            .join(digest_articles, digest_articles.c.article_id == articles.c.id)
            .where(articles.c.key.in_(chunk))
        )
        carried.update({key: digest_id for key, digest_id in rows})
    # Keyed as given: the store keeps keys without NUL.
    return {key: carried[stored_text(key)] for key in keys if stored_text(key) in carried}


def carried_url_digests(conn: Connection, *, published_since: datetime) -> dict[str, int]:
    """The URLs of articles published since then that digests carried, with the digest id."""
    rows = conn.execute(
        select(articles.c.url, digest_articles.c.digest_id)
        .join(digest_articles, digest_articles.c.article_id == articles.c.id)
        .where(articles.c.url.is_not(None), articles.c.published >= published_since)
        .order_by(digest_articles.c.digest_id)
    )
    return {url: digest_id for url, digest_id in rows}
