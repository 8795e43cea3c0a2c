"""Selection: which articles the next digest carries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from newsletter.models import Article


def normalized_url(url: str) -> str:
    """A URL's identity for dedupe: scheme and host lowercased, no fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def select_new_articles(
    candidates: Iterable[Article],
    *,
    now: datetime,
    max_age_days: int,
    max_articles: int,
    per_origin_limit: Mapping[str, int] | None = None,
    carried_urls: Iterable[str] = (),
) -> list[Article]:
    """Newest first, within the age window, one per URL, capped per origin and in total.

    ``candidates`` are articles no digest carried yet (the store decides that by key);
    ``carried_urls`` are the URLs earlier digests carried, so the same story found again under
    another key (a second feed, the folder) does not go out twice.
    """
    oldest = now - timedelta(days=max_age_days)
    limits = per_origin_limit or {}
    ordered = sorted(
        (a for a in candidates if a.published >= oldest),
        key=lambda a: (a.published, a.key),
        reverse=True,
    )
    chosen: list[Article] = []
    seen_urls: set[str] = {normalized_url(u) for u in carried_urls}
    per_origin: dict[str, int] = {}
    for article in ordered:
        if article.url:
            url = normalized_url(article.url)
            if url in seen_urls:
                continue
            seen_urls.add(url)
        limit = limits.get(article.origin)
        if limit is not None and per_origin.get(article.origin, 0) >= limit:
            continue
        per_origin[article.origin] = per_origin.get(article.origin, 0) + 1
        chosen.append(article)
        if len(chosen) >= max_articles:
            break
    return chosen
