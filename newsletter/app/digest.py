"""Gathering articles from the sources and building the next digest (without sending)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from newsletter.app.context import Context
from newsletter.models import Article, RenderedDigest
from newsletter.personalization import TokenSet
from newsletter.render import render_digest
from newsletter.selection import select_new_articles
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
    found: int = 0
    new: int = 0
    problems: list[str] = field(default_factory=list)
    feeds: list[FeedResult] = field(default_factory=list)


def _read_sources(ctx: Context, gathered: Gathered) -> list[Article]:
    settings = ctx.settings.sources
    folder = read_articles_dir(settings.articles_dir)
    for problem in folder.problems:
        gathered.problems.append(str(problem))
        log.warning("skipped article: %s", problem)
    found = list(folder.articles)
    if settings.feeds:
        with ctx.store.atomic() as conn:
            validators = feed_rows.load_validators(conn)
        previous = {url: FeedState(etag=e, last_modified=m) for url, (e, m) in validators.items()}
        gathered.feeds = fetch_feeds(settings, previous=previous, now=ctx.clock())
        for result in gathered.feeds:
            for warning in result.warnings:
                log.warning("feed: %s", warning)
            if result.error:
                gathered.problems.append(result.error)
                log.warning("feed skipped: %s", result.error)
            found.extend(result.articles)
    return found


def gather_candidates(ctx: Context, *, remember: bool = True) -> Gathered:
    """Read every source; with ``remember``, store new articles and feed validators."""
    gathered = Gathered()
    found = _read_sources(ctx, gathered)
    gathered.found = len(found)
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
            gathered.new = len({a.key for a in found} - known)
            fresh = [a for a in found if a.key not in known]
            gathered.candidates = (
                digest_rows.uncarried_articles(conn, published_since=since) + fresh
            )
        gathered.carried_urls = digest_rows.carried_urls(conn, published_since=since)
    return gathered


@dataclass(frozen=True)
class NextDigest:
    articles: list[Article]
    rendered: RenderedDigest
    tokens: TokenSet


def next_digest(ctx: Context, *, remember: bool = True) -> tuple[NextDigest | None, Gathered]:
    """Select and render the next digest; None when there is nothing new to send."""
    gathered = gather_candidates(ctx, remember=remember)
    digest_settings = ctx.settings.digest
    articles = select_new_articles(
        gathered.candidates,
        now=ctx.clock(),
        max_age_days=digest_settings.max_age_days,
        max_articles=digest_settings.max_articles,
        per_origin_limit={f.url: f.max_items for f in ctx.settings.sources.feeds if f.max_items},
        carried_urls=gathered.carried_urls,
    )
    if not articles:
        return None, gathered
    tokens = TokenSet()
    rendered = render_digest(articles, settings=ctx.settings, now=ctx.clock(), tokens=tokens)
    return NextDigest(articles, rendered, tokens), gathered


def preview_digest(ctx: Context) -> tuple[NextDigest | None, Gathered]:
    """The next digest as it would be sent, marking and storing nothing."""
    return next_digest(ctx, remember=False)
