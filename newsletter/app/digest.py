"""Gathering articles from the sources and building the next digest (without sending)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from newsletter.app.archive import UNSENT_ARCHIVE_KEY, new_archive_key, view_in_browser_url
from newsletter.app.context import Context
from newsletter.errors import SourceError
from newsletter.models import Article, RenderedDigest
from newsletter.personalization import TokenSet
from newsletter.render import render_digest
from newsletter.selection import select_new_articles
from newsletter.sources.base import Duplicate, first_by_key
from newsletter.sources.feeds import FeedResult, FeedState, fetch_feeds
from newsletter.sources.folder import read_articles_dir
from newsletter.store import digests as digest_rows
from newsletter.store import feeds as feed_rows

log = logging.getLogger(__name__)


@dataclass
class Gathered:
    """What the sources yielded this time, and what could not be read."""

    candidates: list[Article] = field(default_factory=list)  # not carried by any digest yet
    carried_urls: list[str] = field(default_factory=list)
    found: list[Article] = field(default_factory=list)  # read this time, one per key
    new: int = 0
    problems: list[str] = field(default_factory=list)
    feeds: list[FeedResult] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)  # left out: same key as another


@dataclass(frozen=True)
class _Reading:
    """Every article the folder and the feeds hold now, in that order (keys may repeat),
    and what could not be read."""

    articles: list[Article]
    problems: list[str]
    duplicates: list[Duplicate]  # left out by the folder reader: same key as another file
    feeds: list[FeedResult]


def _read_sources(ctx: Context) -> _Reading:
    """Read the articles folder, then fetch the feeds (conditional GETs)."""
    settings = ctx.settings.sources
    articles: list[Article] = []
    problems: list[str] = []
    duplicates: list[Duplicate] = []
    try:
        folder = read_articles_dir(settings.articles_dir, max_bytes=settings.max_article_bytes)
    except SourceError as exc:
        if not settings.feeds:  # no source left: a setting to fix, not a digest to send
            raise
        problems.append(str(exc))  # the feeds still go out
        log.warning("articles folder skipped: %s", exc)
    else:
        for problem in folder.problems:
            problems.append(str(problem))
            log.warning("skipped article: %s", problem)
        duplicates.extend(folder.duplicates)
        articles.extend(folder.articles)
    feeds: list[FeedResult] = []
    if settings.feeds:
        with ctx.store.atomic() as conn:
            validators = feed_rows.load_validators(conn)
        previous = {url: FeedState(etag=e, last_modified=m) for url, (e, m) in validators.items()}
        feeds = fetch_feeds(settings, previous=previous, now=ctx.clock())
        for result in feeds:
            for warning in result.warnings:
                log.warning("feed: %s", warning)
            if result.error:
                problems.append(result.error)
                log.warning("feed skipped: %s", result.error)
            articles.extend(result.articles)
    return _Reading(articles, problems, duplicates, feeds)


def gather_candidates(ctx: Context, *, remember: bool = True) -> Gathered:
    """Read every source; with ``remember``, store new articles and feed validators.

    The same article found under one key twice (a story in two feeds, a file beside its
    feed entry) is counted once, the first found; both ways (remembering or not) use exactly
    the same articles, so a preview shows what a send carries.
    """
    reading = _read_sources(ctx)
    found, duplicates = first_by_key(reading.articles)
    gathered = Gathered(
        found=found,
        problems=reading.problems,
        feeds=reading.feeds,
        duplicates=reading.duplicates + duplicates,
    )
    now = ctx.clock()
    since = now - timedelta(days=ctx.settings.digest.max_age_days)
    with ctx.store.atomic() as conn:
        if remember:
            gathered.new = digest_rows.remember_articles(conn, found, now=now)
            for result in gathered.feeds:
                if not result.error:
                    feed_rows.save_validators(
                        conn,
                        result.feed.url,
                        etag=result.state.etag,
                        last_modified=result.state.last_modified,
                        now=now,
                    )
            gathered.candidates = digest_rows.uncarried_articles(conn, published_since=since)
        else:
            known = digest_rows.known_keys(conn, [a.key for a in found])
            fresh = [a for a in found if a.key not in known]
            gathered.new = len(fresh)
            gathered.candidates = (
                digest_rows.uncarried_articles(conn, published_since=since) + fresh
            )
        gathered.carried_urls = digest_rows.carried_urls(conn, published_since=since)
    return gathered


@dataclass(frozen=True)
class NextDigest:
    """The next digest: the articles it carries (in order) and the digest rendered once.

    ``selected`` is what selection chose; the render stage may leave some of them out for
    size (``rendered.carried_over``), so ``articles`` are the ones actually included.
    ``archive_key`` is what its "View in browser" link names, stored with the digest.
    """

    articles: list[Article]
    rendered: RenderedDigest
    tokens: TokenSet
    selected: list[Article] = field(default_factory=list)
    archive_key: str | None = None


def _select(ctx: Context, gathered: Gathered) -> list[Article]:
    """The candidates the next digest would carry, by the digest and feed settings."""
    digest_settings = ctx.settings.digest
    return select_new_articles(
        gathered.candidates,
        now=ctx.clock(),
        max_age_days=digest_settings.max_age_days,
        max_articles=digest_settings.max_articles,
        per_origin_limit={f.url: f.max_items for f in ctx.settings.sources.feeds if f.max_items},
        carried_urls=gathered.carried_urls,
    )


def next_digest(ctx: Context, *, remember: bool = True) -> tuple[NextDigest | None, Gathered]:
    """Select and render the next digest; None when there is nothing new to send."""
    gathered = gather_candidates(ctx, remember=remember)
    selected = _select(ctx, gathered)
    if not selected:
        return None, gathered
    tokens = TokenSet()
    # A preview or test copy is never stored: its link names no digest, the same every time.
    archive_key = new_archive_key() if remember else UNSENT_ARCHIVE_KEY
    rendered = render_digest(
        selected,
        settings=ctx.settings,
        now=ctx.clock(),
        tokens=tokens,
        view_in_browser_url=view_in_browser_url(ctx.settings, archive_key),
    )
    included = set(rendered.article_keys)
    articles = [a for a in selected if a.key in included]
    return NextDigest(articles, rendered, tokens, selected, archive_key), gathered
