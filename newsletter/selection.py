"""Selection: which articles the next digest carries."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from newsletter.models import Article


def normalized_url(url: str) -> str:
    """A URL's identity for dedupe: scheme and host lowercased, no fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


class Verdict(enum.Enum):
    """Selection's decision about one candidate, in the order the rules are applied."""

    CHOSEN = "chosen"
    TOO_OLD = "too old"
    SAME_URL = "same URL"  # a newer candidate or an earlier digest has this URL
    OVER_SOURCE_CAP = "over the source's cap"
    OVER_CAP = "over the cap"


@dataclass(frozen=True)
class Judgement:
    """One candidate and what selection decided; ``same_url_as`` names what took its URL:
    the newer candidate, or the digest (its id, when known) that carried it."""

    article: Article
    verdict: Verdict
    same_url_as: Article | int | None = None


def judge_candidates(
    candidates: Iterable[Article],
    *,
    now: datetime,
    max_age_days: int,
    max_articles: int,
    per_origin_limit: Mapping[str, int] | None = None,
    carried_urls: Mapping[str, int | None] | Iterable[str] = (),
) -> list[Judgement]:
    """Every candidate with selection's verdict, newest first (see :func:`select_new_articles`).

    ``carried_urls`` are the URLs earlier digests carried, optionally mapped to the digest id.
    """
    oldest = now - timedelta(days=max_age_days)
    limits = per_origin_limit or {}
    carried = carried_urls if isinstance(carried_urls, Mapping) else dict.fromkeys(carried_urls)
    seen_urls: dict[str, Article | int | None] = {
        normalized_url(url): digest for url, digest in carried.items()
    }
    per_origin: dict[str, int] = {}
    chosen = 0
    judged: list[Judgement] = []
    for article in sorted(candidates, key=lambda a: (a.published, a.key), reverse=True):
        verdict, same_url_as = Verdict.CHOSEN, None
        url = normalized_url(article.url) if article.url else None
        limit = limits.get(article.origin)
        if article.published < oldest:
            verdict = Verdict.TOO_OLD
        elif url is not None and url in seen_urls:
            verdict, same_url_as = Verdict.SAME_URL, seen_urls[url]
        elif limit is not None and per_origin.get(article.origin, 0) >= limit:
            verdict = Verdict.OVER_SOURCE_CAP
        elif chosen >= max_articles:
            verdict = Verdict.OVER_CAP
        if url is not None and verdict is not Verdict.TOO_OLD:
            seen_urls.setdefault(url, article)  # a URL is taken by the newest, chosen or not
        if verdict is Verdict.CHOSEN:
            per_origin[article.origin] = per_origin.get(article.origin, 0) + 1
            chosen += 1
        judged.append(Judgement(article, verdict, same_url_as))
    return judged


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
    judged = judge_candidates(
        candidates,
        now=now,
        max_age_days=max_age_days,
        max_articles=max_articles,
        per_origin_limit=per_origin_limit,
        carried_urls=carried_urls,
    )
    return [j.article for j in judged if j.verdict is Verdict.CHOSEN]
