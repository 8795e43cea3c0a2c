"""Fitting the digest under ``[digest] max_html_bytes``, whatever the articles and templates.

Both parts must fit with the longest personal values a subscriber can have. The digest shrinks
in steps until they do: full texts; then summaries; then headline and link only for the oldest
articles; then the oldest articles are left out (carried over: they stay new for the next one).

Steps change the data, not the markup: a reduced article reaches the templates as a copy without
its body (and, as a headline, without its summary), so any template, ours or a user's, shrinks
the same way. What each article block costs under each step is measured once, from a few plain
Jinja renders with a marker before every title. Premailer, the costly part, only runs on a
layout the estimate says fits: normally once, twice when the first estimate was off. A layout
whose raw HTML is already far over the limit never reaches it, however big an article is.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from newsletter import render_text
from newsletter.errors import TemplateError
from newsletter.models import Article, SizeStep
from newsletter.render_measure import TAG, BlockMarkers, Cost, cost_of

logger = logging.getLogger(__name__)


class Treatment(enum.IntEnum):
    """How one article is shown: the smaller the value, the more of it."""

    FULL = 0
    SUMMARY = 1
    HEADLINE = 2


# A reduced article shows at most this much of its fields, so a reduced block has a bounded
# size whatever a source sent. A longer URL is not a link any mail client keeps.
REDUCED_TITLE_MAX_CHARS = 300
REDUCED_SUMMARY_MAX_CHARS = 600
REDUCED_SOURCE_MAX_CHARS = 100
REDUCED_MAX_TAGS = 10
REDUCED_TAG_MAX_CHARS = 40
REDUCED_URL_MAX_CHARS = 2048
# Bytes of style="" premailer adds per element, before it was measured on this template (ours
# adds 40-90). Only the first layout is chosen with it; later ones use the measured value.
PRIOR_STYLE_BYTES_PER_TAG = 80.0
MARGIN_FRACTION = 0.02  # aim this far under the limit: the estimate is not exact
# Inlining only adds style attributes (and turns a few entities into shorter characters), so
# raw HTML this far over the limit cannot fit once inlined: premailer is not even tried.
HOPELESS_RAW_FACTOR = 1.25
GUIDED_INLINES = 2  # inlines chosen by the estimate; a rare third on is a bisection


@dataclass(frozen=True)
class Draft:
    """One layout as the templates get it."""

    articles: tuple[Article, ...]  # shown, in digest order; reduced ones are copies
    originals: tuple[Article, ...]  # the same articles as selected (for subject and preheader)
    summaries_only: bool  # no article is shown in full


@dataclass(frozen=True)
class Renderers:
    """The render stage's parts the fitting drives; sizes are worst-case bytes."""

    html: Callable[[Draft], str]  # the HTML template, not inlined
    inline: Callable[[str], str]
    text: Callable[[Draft], str]
    html_size: Callable[[str], int]
    text_size: Callable[[str], int]


@dataclass(frozen=True)
class Fitted:
    """The digest that fits, and what it took."""

    html: str
    text: str
    draft: Draft
    step: SizeStep
    carried_over: tuple[str, ...]


def fit_digest(articles: Sequence[Article], renderers: Renderers, *, limit: int) -> Fitted:
    """Render ``articles`` as fully as fits in ``limit`` bytes per part (see the module doc)."""
    return _Fitting(tuple(articles), renderers, limit).run()


def reduced(article: Article, treatment: Treatment) -> Article:
    """The copy of ``article`` the templates get under ``treatment``."""
    if treatment is Treatment.FULL:
        return article
    summary = "" if treatment is Treatment.HEADLINE else article.summary
    url = article.url if article.url and len(article.url) <= REDUCED_URL_MAX_CHARS else None
    return replace(
        article,
        title=_clip(article.title, REDUCED_TITLE_MAX_CHARS),
        summary=_clip(summary, REDUCED_SUMMARY_MAX_CHARS),
        paragraphs=(),
        body_html=None,
        url=url,
        source=_clip(article.source, REDUCED_SOURCE_MAX_CHARS) if article.source else None,
        tags=tuple(_clip(t, REDUCED_TAG_MAX_CHARS) for t in article.tags[:REDUCED_MAX_TAGS]),
    )


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Cut first: collapsing a 100 MB string would cost more than the digest is worth.
    return render_text.truncate(render_text.collapse(text[: limit * 4]), limit)


def _full_text_chars(article: Article) -> int:
    """A lower bound of the bytes the article adds in full: its text, without markup."""
    body = len(article.body_html or "") + sum(len(p) for p in article.paragraphs)
    return len(article.title) + len(article.summary) + body


@dataclass
class _Part:
    """The cost model of one part (HTML or text) of the digest."""

    skeleton: Cost
    blocks: dict[Treatment, list[Cost]]  # by treatment, then by article index
    style_per_tag: float  # 0 for the text part: nothing is inlined there
    correction: float = 0.0  # measured minus estimated, from the last render of this part


@dataclass(frozen=True)
class _Outcome:
    level: int
    html: str
    text: str
    fits: bool


class _Fitting:
    def __init__(self, articles: tuple[Article, ...], renderers: Renderers, limit: int) -> None:
        self.articles = articles
        self.renderers = renderers
        self.limit = limit
        self.budget = limit * (1 - MARGIN_FRACTION)
        self.markers = BlockMarkers()
        self.inlines = 0
        # Newest first: the oldest articles are reduced and left out first.
        self.by_age = sorted(
            range(len(articles)),
            key=lambda i: (articles[i].published, articles[i].key),
            reverse=True,
        )
        # An article whose text alone is over the limit is never rendered in full, and full
        # texts are not rendered at all when together they are over it: level 0 then shows
        # summaries. So no render, and no premailer run, ever sees more text than the limit.
        full_chars = [_full_text_chars(a) for a in articles]
        self.full_ok = [chars <= self.budget for chars in full_chars]
        if sum(c for c, ok in zip(full_chars, self.full_ok, strict=True) if ok) > self.budget:
            self.full_ok = [False] * len(articles)
        self.html, self.text = self._measure()
        self.eligible = [i for i in self.by_age if self._fits_alone(i)]
        # The last level keeps one article; with no articles at all there is one level.
        self.levels = 2 * len(self.eligible) + 1 if self.eligible else 1

    # -- measuring -------------------------------------------------------------------------

    def _measure(self) -> tuple[_Part, _Part]:
        """The cost of the skeleton and of every article under every treatment, once."""
        empty = Draft((), self.articles, summaries_only=False)
        html_skeleton = cost_of(self.renderers.html(empty), self.renderers.html_size)
        html = _Part(html_skeleton, {}, PRIOR_STYLE_BYTES_PER_TAG)
        text = _Part(cost_of(self.renderers.text(empty), self.renderers.text_size), {}, 0.0)
        treatments = [Treatment.SUMMARY, Treatment.HEADLINE]
        if any(self.full_ok):
            treatments.insert(0, Treatment.FULL)
        for treatment in treatments:
            shown = [reduced(a, self._treatment(i, treatment)) for i, a in enumerate(self.articles)]
            weights = [_full_text_chars(a) + len(a.url or "") + 200 for a in shown]
            for part, render, size_of, is_html in (
                (html, self.renderers.html, self.renderers.html_size, True),
                (text, self.renderers.text, self.renderers.text_size, False),
            ):
                marked = self.markers.marked(shown, html=is_html)
                doc = render(Draft(marked, self.articles, summaries_only=False))
                part.blocks[treatment] = self.markers.block_costs(
                    doc, part.skeleton, size_of, weights
                )
        if not any(self.full_ok):  # level 0 is then the same as all summaries
            html.blocks[Treatment.FULL] = html.blocks[Treatment.SUMMARY]
            text.blocks[Treatment.FULL] = text.blocks[Treatment.SUMMARY]
        return html, text

    def _treatment(self, index: int, wanted: Treatment) -> Treatment:
        if wanted is Treatment.FULL and not self.full_ok[index]:
            return Treatment.SUMMARY
        return wanted

    def _fits_alone(self, index: int) -> bool:
        """False for an article whose headline alone does not fit: it is carried over."""
        for part in (self.html, self.text):
            headline = part.blocks[Treatment.HEADLINE][index]
            alone = part.skeleton.estimate(part.style_per_tag) + headline.estimate(
                part.style_per_tag
            )
            if alone > self.budget:
                return False
        return True

    # -- layouts ---------------------------------------------------------------------------
    # Level 0 shows full texts (summaries for articles too big alone); level 1 summaries;
    # levels 2..m+1 the oldest 1..m articles as headlines; levels m+2..2m leave the oldest
    # 1..m-1 out, the rest as headlines. ``m`` counts the articles whose headline fits alone.

    def _layout(self, level: int) -> dict[int, Treatment]:
        m = len(self.eligible)
        if level == 0:
            return {i: self._treatment(i, Treatment.FULL) for i in self.eligible}
        if level <= m + 1:
            headlines = level - 1
            return {
                i: Treatment.HEADLINE if pos >= m - headlines else Treatment.SUMMARY
                for pos, i in enumerate(self.eligible)
            }
        left_out = level - m - 1
        return {i: Treatment.HEADLINE for i in self.eligible[: m - left_out]}

    def _estimates(self, part: _Part) -> list[float]:
        """The estimated worst-case size of ``part`` at every level, in one pass."""
        per_tag = part.style_per_tag
        full = [part.blocks[Treatment.FULL][i].estimate(per_tag) for i in self.eligible]
        summary = [part.blocks[Treatment.SUMMARY][i].estimate(per_tag) for i in self.eligible]
        headline = [part.blocks[Treatment.HEADLINE][i].estimate(per_tag) for i in self.eligible]
        m = len(self.eligible)
        summary_prefix, headline_prefix = [0.0], [0.0]
        for s, h in zip(summary, headline, strict=True):
            summary_prefix.append(summary_prefix[-1] + s)
            headline_prefix.append(headline_prefix[-1] + h)
        base = part.skeleton.estimate(per_tag) + part.correction
        totals = [base + sum(full)]
        for headlines in range(m + 1):
            kept = m - headlines
            totals.append(base + summary_prefix[kept] + headline_prefix[m] - headline_prefix[kept])
        for left_out in range(1, m):
            totals.append(base + headline_prefix[m - left_out])
        return totals[: self.levels]

    def _first_fitting(self, low: int, high: int) -> int | None:
        html, text = self._estimates(self.html), self._estimates(self.text)
        for level in range(low, high + 1):
            if html[level] <= self.budget and text[level] <= self.budget:
                return level
        return None

    def _draft(self, layout: dict[int, Treatment]) -> Draft:
        included = [i for i in range(len(self.articles)) if i in layout]
        return Draft(
            tuple(reduced(self.articles[i], layout[i]) for i in included),
            tuple(self.articles[i] for i in included),
            summaries_only=bool(included)
            and all(layout[i] is not Treatment.FULL for i in included),
        )

    # -- rendering -------------------------------------------------------------------------

    def _try(self, level: int) -> _Outcome:
        """Render ``level`` for real and learn from the sizes it really has."""
        draft = self._draft(self._layout(level))
        text = self.renderers.text(draft)
        text_size = self.renderers.text_size(text)
        self._correct(self.text, level, text_size)
        if text_size > self.limit:
            return _Outcome(level, "", text, fits=False)
        raw = self.renderers.html(draft)
        raw_size = self.renderers.html_size(raw)
        tags = len(TAG.findall(raw))
        if raw_size > self.limit * HOPELESS_RAW_FACTOR:
            self._correct(self.html, level, raw_size + self.html.style_per_tag * tags)
            return _Outcome(level, "", text, fits=False)
        html = self.renderers.inline(raw)
        self.inlines += 1
        html_size = self.renderers.html_size(html)
        if tags:
            added = len(html.encode("utf-8")) - len(raw.encode("utf-8"))
            self.html.style_per_tag = max(added / tags, 0.0)
        self._correct(self.html, level, html_size)
        return _Outcome(level, html, text, fits=html_size <= self.limit)

    def _correct(self, part: _Part, level: int, measured: float) -> None:
        """From now on, estimate ``part`` off by what it was off at ``level``."""
        part.correction = 0.0
        part.correction = measured - self._estimates(part)[level]

    def run(self) -> Fitted:
        if self.articles and not self.eligible:
            raise self._does_not_fit("with even one article")
        last = self.levels - 1
        failed = -1  # every level up to this one was too big (sizes shrink as levels rise)
        best: _Outcome | None = None
        attempts = 0
        while True:
            low, high = failed + 1, (best.level - 1 if best else last)
            if low > high:
                break
            guess = self._first_fitting(low, high)
            if best is not None:  # it fits already: one more inline to show more, at most
                if guess is None or self.inlines >= GUIDED_INLINES or attempts > GUIDED_INLINES:
                    break
                level = guess
            elif attempts < GUIDED_INLINES:
                level = high if guess is None else guess
            else:  # the estimate missed twice: bisect, so the inlines stay logarithmic
                level = max(high if guess is None else guess, (low + high + 1) // 2)
            attempts += 1
            outcome = self._try(level)
            if outcome.fits:
                best = outcome
            else:
                failed = level
        return self._result(best)

    def _does_not_fit(self, what: str) -> TemplateError:
        return TemplateError(
            f"the digest does not fit in digest.max_html_bytes={self.limit} {what}, counting "
            "the longest names, addresses and links a subscriber can have: raise "
            "digest.max_html_bytes or make the templates lighter"
        )

    def _result(self, best: _Outcome | None) -> Fitted:
        if best is None:
            raise self._does_not_fit("with even one article" if self.articles else "")
        layout = self._layout(best.level)
        draft = self._draft(layout)
        carried = tuple(a.key for i, a in enumerate(self.articles) if i not in layout)
        shown = list(layout.values())
        if carried:
            step = SizeStep.CARRIED_OVER
        elif Treatment.HEADLINE in shown:
            step = SizeStep.HEADLINES
        elif Treatment.SUMMARY in shown:
            step = SizeStep.SUMMARIES
        else:
            step = SizeStep.FULL
        self._log(step, layout, carried, best)
        return Fitted(best.html, best.text, draft, step, carried)

    def _log(
        self, step: SizeStep, layout: dict[int, Treatment], carried: tuple[str, ...], best: _Outcome
    ) -> None:
        html_kb = self.renderers.html_size(best.html) / 1000
        if step is SizeStep.FULL:
            logger.info(
                "digest size: %d articles in full, %.1f KB of %.1f KB (HTML, longest personal "
                "values)",
                len(layout),
                html_kb,
                self.limit / 1000,
            )
            return
        counts = {t: sum(1 for v in layout.values() if v is t) for t in Treatment}
        logger.warning(
            "digest size: reduced to fit digest.max_html_bytes=%d: %d in full, %d as summaries, "
            "%d as headline and link, %d carried over to the next digest (%.1f KB, %d inlines)",
            self.limit,
            counts[Treatment.FULL],
            counts[Treatment.SUMMARY],
            counts[Treatment.HEADLINE],
            len(carried),
            html_kb,
            self.inlines,
        )
