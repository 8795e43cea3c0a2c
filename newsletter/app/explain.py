"""``sources list --explain``: every article found and what becomes of it in the next digest.

For operators asking "why didn't my article go out": each article the sources hold (and each
one stored but not sent yet) gets one fate, in the order the pipeline decides them: already
sent in a digest, goes into the next digest, carried to the next digest for size, too old, a
URL that already went out or goes out under another key, over the cap; and each file or
entry that could not be read is listed as skipped, with the reason. Nothing is stored.

The selection fates (too old, URL, cap) are selection's own verdicts
(:func:`newsletter.selection.judge_candidates`), so the explanation cannot drift from the rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from newsletter.app.context import Context
from newsletter.app.digest import Gathered, next_digest
from newsletter.models import Article
from newsletter.selection import Verdict, judge_candidates
from newsletter.store import articles as article_rows


class Fate(enum.Enum):
    """What happens to an article, in the order a listing shows them."""

    NEXT = "goes into the next digest"
    CARRIED_OVER = "carried to the next digest: size"
    SENT = "already sent"
    TOO_OLD = "too old"
    SAME_URL = "same URL"
    OVER_CAP = "over the cap"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ArticleFate:
    """One article (None for a file or entry that could not be read) and its fate."""

    article: Article | None
    fate: Fate
    reason: str  # the fate as a line of text: "already sent in digest 3", "skipped: ..."


def explain_next_digest(ctx: Context) -> list[ArticleFate]:
    """The fate of every article found or waiting, as the next send would decide it.

    Sorted by fate (see :class:`Fate`), then newest first. Storing and sending nothing.
    """
    upcoming, gathered = next_digest(ctx, remember=False)
    included = set(upcoming.rendered.article_keys) if upcoming else set()
    carried_over = set(upcoming.rendered.carried_over) if upcoming else set()
    selected = {a.key for a in upcoming.selected} if upcoming else set()
    articles = _every_article(gathered)
    since = ctx.clock() - timedelta(days=ctx.settings.digest.max_age_days)
    with ctx.store.atomic() as conn:
        sent_in = article_rows.carrying_digests(conn, [a.key for a in articles])
        sent_urls = article_rows.carried_url_digests(conn, published_since=since)
    not_chosen = _selection_fates(ctx, [a for a in articles if a.key not in sent_in], sent_urls)
    fates: list[ArticleFate] = []
    for article in articles:
        if article.key in sent_in:
            fate = ArticleFate(article, Fate.SENT, f"already sent in digest {sent_in[article.key]}")
        elif article.key in included:
            fate = ArticleFate(article, Fate.NEXT, Fate.NEXT.value)
        elif article.key in carried_over or article.key in selected:
            # chosen, but the render left it out to stay under the size limit
            fate = ArticleFate(article, Fate.CARRIED_OVER, Fate.CARRIED_OVER.value)
        else:
            fate = not_chosen[article.key]
        fates.append(fate)
    for duplicate in gathered.duplicates:
        fates.append(
            ArticleFate(
                duplicate.article,
                Fate.SKIPPED,
                f"skipped: the same article as {duplicate.kept.origin} (key {duplicate.kept.key})",
            )
        )
    fates.extend(ArticleFate(None, Fate.SKIPPED, f"skipped: {p}") for p in gathered.problems)
    # Newest first within each fate, as `sources list` lists them; problems last, in order.
    fates.sort(
        key=lambda f: (f.article.published, f.article.key) if f.article else (), reverse=True
    )
    order = list(Fate)
    return sorted(fates, key=lambda f: (order.index(f.fate), f.article is None))


def _every_article(gathered: Gathered) -> list[Article]:
    """The articles waiting for a digest (as selection sees them: the stored copy of one seen
    before) and the others found now, once each."""
    by_key = {a.key: a for a in gathered.candidates}
    for article in gathered.found:
        by_key.setdefault(article.key, article)
    return list(by_key.values())


def _selection_fates(
    ctx: Context, waiting: list[Article], sent_by_url: dict[str, int]
) -> dict[str, ArticleFate]:
    """Why selection passed over each of ``waiting``, in selection's own words and rules."""
    settings = ctx.settings.digest
    feed_caps = {f.url: f.max_items for f in ctx.settings.sources.feeds if f.max_items}
    judged = judge_candidates(
        waiting,
        now=ctx.clock(),
        max_age_days=settings.max_age_days,
        max_articles=settings.max_articles,
        per_origin_limit=feed_caps,
        carried_urls=sent_by_url,
    )
    fates: dict[str, ArticleFate] = {}
    for judgement in judged:
        article, verdict, earlier = judgement.article, judgement.verdict, judgement.same_url_as
        if verdict is Verdict.TOO_OLD:
            reason = (
                f"too old: published {article.published:%Y-%m-%d}, more than "
                f"[digest] max_age_days = {settings.max_age_days} days ago"
            )
            fates[article.key] = ArticleFate(article, Fate.TOO_OLD, reason)
        elif verdict is Verdict.SAME_URL:
            reason = (
                f"same URL as {earlier.origin} ({earlier.key}), which is newer"
                if isinstance(earlier, Article)
                else f"same URL as an article already sent in digest {earlier}"
            )
            fates[article.key] = ArticleFate(article, Fate.SAME_URL, reason)
        elif verdict is not Verdict.CHOSEN:
            cap = f"at most [digest] max_articles = {settings.max_articles} per digest"
            if article.origin in feed_caps:
                cap += f" and max_items = {feed_caps[article.origin]} from {article.origin}"
            fates[article.key] = ArticleFate(article, Fate.OVER_CAP, f"over the cap: {cap}")
    return fates
