"""The source contract: what a reader hands over, the one key builder, the one title policy.

Every reader (scraped text, Markdown, feed entries) turns its input into a :class:`Draft`:
the facts it found, with the title and summary it was *given*, if any. :func:`finish_article`
applies the same rules to all of them: the key (:func:`article_key`), a headline derived from
the lead when there is no title, a summary that does not repeat the title, limits on length.
A reader that cannot use its input raises ``ArticleError`` with a one-line message naming the
file (or feed entry) and what to fix; a source collects those as ``problems``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from newsletter.errors import ArticleError
from newsletter.models import Article
from newsletter.sources.headlines import continuation, split_headline, summarize
from newsletter.text import collapse, truncate

UNTITLED = "(untitled)"
GIVEN_TITLE_MAX_CHARS = 200  # a title the source gave is kept whole up to this length
GIVEN_SUMMARY_MAX_CHARS = 300
KEY_MAX_CHARS = 600  # the length of the store's key column

# `tag:`, `urn:`, `https:`: an id that is unique on its own (Atom ids must be IRIs).
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S")


@dataclass(frozen=True)
class Identity:
    """What identifies an article; the first one set, in this order, makes its key."""

    guid: str = ""  # a feed entry's id
    scope: str = ""  # where a guid that is not a URI is unique: the feed's URL
    url: str = ""  # the article's own http(s) address
    file_id: str = ""  # a file's id in its folder
    file_kind: str = "file"  # which reader's id namespace ``file_id`` is in
    content: str = ""  # the last resort: the content itself, hashed


def article_key(identity: Identity) -> str:
    """The stable key of an article: the same article always gets the same key, and two
    different identities never share one (each kind has its own prefix)."""
    if identity.guid:
        if identity.scope and not _URI_RE.match(identity.guid):
            # `42` is unique in one feed only; two feeds may both have an entry `42`.
            key = f"id:{identity.scope}#{identity.guid}"
        else:
            key = f"id:{identity.guid}"
    elif identity.url:
        key = f"url:{identity.url}"
    elif identity.file_id:
        key = f"{identity.file_kind}:{identity.file_id}"
    else:
        return f"hash:{_sha256(identity.content)[:32]}"
    if len(key) > KEY_MAX_CHARS:  # the store's column; a hash keeps it unique and stable
        kind, _, value = key.partition(":")
        return f"{kind}:{value[:200]}…{_sha256(value)}"
    return key


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Draft:
    """What a reader found in one article, before the common policy makes it an Article.

    ``title`` and ``summary`` are what the source gave ("" if nothing); ``lead`` is the plain
    text a missing title or summary is derived from when the body is HTML.
    """

    identity: Identity
    published: datetime
    origin: str
    title: str = ""
    summary: str = ""
    paragraphs: tuple[str, ...] = ()
    body_html: str | None = None
    lead: str = ""
    url: str | None = None
    source: str | None = None
    tags: tuple[str, ...] = ()


def finish_article(draft: Draft) -> Article:
    """The Article for ``draft``: key, headline (given or derived), summary, body.

    A derived headline is not repeated: plain-text bodies open with what follows it, and
    the summary starts there too. A given title or summary is collapsed and kept, cut only
    when very long.
    """
    paragraphs = tuple(p for p in (collapse(p) for p in draft.paragraphs) if p)
    lead = collapse(draft.lead) or " ".join(paragraphs)
    given_summary = collapse(draft.summary)
    title = truncate(collapse(draft.title), GIVEN_TITLE_MAX_CHARS)
    body_html = draft.body_html
    if title:
        rest = continuation(lead, title)
    elif paragraphs:
        title, opening = split_headline(paragraphs[0])
        paragraphs = tuple(p for p in (opening, *paragraphs[1:]) if p)
        rest = " ".join(paragraphs)
    else:
        title, rest = split_headline(lead)
        if not rest and body_html and "<img" not in body_html:
            body_html = None  # the headline says all the body did
    if given_summary and given_summary != lead:
        summary = summarize(given_summary, GIVEN_SUMMARY_MAX_CHARS)
    else:
        summary = summarize(rest)
    return Article(
        key=article_key(draft.identity),
        title=title or UNTITLED,
        published=draft.published,
        summary=summary,
        paragraphs=paragraphs,
        body_html=body_html,
        url=draft.url,
        source=draft.source,
        tags=draft.tags,
        origin=draft.origin,
    )


@dataclass(frozen=True)
class Duplicate:
    """An article left out because an earlier one (``kept``) has the same key."""

    article: Article
    kept: Article

    @property
    def same_content(self) -> bool:
        """True when both are the same article found twice, False for a real conflict."""
        return replace(self.article, origin="") == replace(self.kept, origin="")


@dataclass
class SourceResult:
    """What one source yielded: its articles, one problem per article it could not read, and
    the copies of an article it found twice (left out, not a problem)."""

    articles: list[Article] = field(default_factory=list)
    problems: list[ArticleError] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)


def first_by_key(articles: Iterable[Article]) -> tuple[list[Article], list[Duplicate]]:
    """The articles with distinct keys, in order (the first of each key wins), and the rest."""
    kept: dict[str, Article] = {}
    duplicates: list[Duplicate] = []
    for article in articles:
        first = kept.setdefault(article.key, article)
        if first is not article:
            duplicates.append(Duplicate(article, first))
    return list(kept.values()), duplicates
