"""``sources check`` and ``sources list``: read every source once, storing nothing."""

from __future__ import annotations

from dataclasses import dataclass

from newsletter.app.context import Context
from newsletter.app.digest import gather_candidates
from newsletter.errors import SourceError
from newsletter.models import Article
from newsletter.sources.feeds import FeedState, fetch_feeds
from newsletter.sources.folder import read_articles_dir
from newsletter.store import digests as digest_rows
from newsletter.store import feeds as feed_rows


@dataclass(frozen=True)
class SourceCheck:
    """One source: how many entries it has, how many the store has not seen, what went wrong."""

    name: str
    entries: int
    new: int
    problems: tuple[str, ...] = ()
    not_modified: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def check_sources(ctx: Context) -> list[SourceCheck]:
    """Fetch the folder and every feed now (conditional GETs); the store is not changed."""
    settings = ctx.settings.sources
    checks: list[SourceCheck] = []
    with ctx.store.atomic() as conn:
        validators = feed_rows.load_validators(conn)
        try:
            folder = read_articles_dir(settings.articles_dir, max_bytes=settings.max_article_bytes)
        except SourceError as exc:
            checks.append(SourceCheck(str(settings.articles_dir), 0, 0, (str(exc),)))
        else:
            known = digest_rows.known_keys(conn, [a.key for a in folder.articles])
            checks.append(
                SourceCheck(
                    str(settings.articles_dir),
                    len(folder.articles),
                    sum(a.key not in known for a in folder.articles),
                    tuple(str(p) for p in folder.problems),
                )
            )
        previous = {url: FeedState(etag=e, last_modified=m) for url, (e, m) in validators.items()}
        for result in fetch_feeds(settings, previous=previous, now=ctx.clock()):
            known = digest_rows.known_keys(conn, [a.key for a in result.articles])
            problems = tuple(result.warnings) + ((result.error,) if result.error else ())
            checks.append(
                SourceCheck(
                    result.feed.name or result.feed.url,
                    len(result.articles),
                    sum(a.key not in known for a in result.articles),
                    problems,
                    result.not_modified,
                )
            )
    return checks


@dataclass(frozen=True)
class ArticleListing:
    """Every article the sources hold now (one per key, newest first) and what was skipped."""

    articles: list[Article]
    problems: list[str]


def list_articles(ctx: Context) -> ArticleListing:
    """Read every source now, as a send would, storing nothing."""
    gathered = gather_candidates(ctx, remember=False)
    articles = sorted(gathered.found, key=lambda a: (a.published, a.key), reverse=True)
    return ArticleListing(articles, gathered.problems)
