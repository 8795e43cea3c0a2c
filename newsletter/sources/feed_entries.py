"""A downloaded RSS 0.9x/1.0/2.0 or Atom document turned into ``Article``s.

:func:`parse_feed` reads the bytes with feedparser and turns each entry into a
:class:`~newsletter.sources.base.Draft` (title and summary as the feed gives them, date,
identity, sanitized body); the common policy in :mod:`newsletter.sources.base` makes the
Article, as for files. Entry HTML is untrusted and goes through
:func:`~newsletter.sources.sanitize.sanitize_html`. Downloading is
:mod:`newsletter.sources.feeds`' job.
"""

from __future__ import annotations

import calendar
import html
import io
import re
import xml.sax
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
import nh3
from feedparser.exceptions import (
    CharacterEncodingOverride,
    CharacterEncodingUnknown,
    ThingsNobodyCaresAboutButMe,
)

from newsletter.config import FeedSettings
from newsletter.errors import ArticleError, SourceError
from newsletter.models import Article
from newsletter.sources.base import Draft, Identity, SourceResult, finish_article
from newsletter.sources.sanitize import absolute_url, sanitize_html, text_to_html
from newsletter.text import collapse, html_to_line

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_HTML_PAGE = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S)


def parse_feed(
    data: bytes,
    *,
    feed: FeedSettings,
    base_url: str,
    now: datetime,
    content_type: str | None = None,
) -> SourceResult:
    """Articles from one downloaded feed document, newest first, plus problems.

    ``base_url`` is where the document was fetched from (relative links are resolved against
    it); ``now`` (timezone-aware) dates entries that carry no date. A malformed feed yields the
    entries that could be read and a problem; so does an entry that cannot be read, or that
    has the id of an earlier, different entry. Raises ``SourceError`` when nothing could be
    read: not a feed, or no entries and broken.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    label = feed_label(feed)
    if not data.strip():
        raise SourceError(f"{label}: empty response; check that the url points at the feed")
    parsed = feedparser.parse(
        io.BytesIO(data),  # never a bare bytes object: feedparser may open it as a file name
        response_headers={
            "content-type": _xml_content_type(content_type),
            "content-location": base_url,
        },
        # nh3 sanitizes everything taken from the entry. feedparser's own pass would run
        # first and strip <iframe>, <form>, <noscript> but keep the text inside them.
        sanitize_html=False,
    )
    problem = _bozo_problem(parsed) if parsed.get("bozo") else None
    if not parsed.entries and (problem or not parsed.get("version")):
        raise SourceError(f"{label}: {_not_a_feed(data, problem)}")

    source = _feed_title(feed, parsed)
    result = SourceResult()
    seen: dict[str, tuple[int, Article]] = {}  # key -> the entry number and article with it
    for number, entry in enumerate(parsed.entries, start=1):
        try:
            draft = _draft(entry, feed=feed, source=source, base_url=base_url, now=now)
            article = finish_article(draft) if draft else None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            result.problems.append(
                ArticleError(f"{label}: entry {number} skipped ({collapse(repr(exc))})")
            )
            continue
        if article is None:
            continue
        if article.key in seen:
            first_number, first = seen[article.key]
            if (first.title, first.summary) != (article.title, article.summary):
                result.problems.append(
                    ArticleError(
                        f"{label}: entry {number} skipped: it has the id of entry "
                        f"{first_number} ({article.key}) but other content; "
                        "the feed should give each entry its own id"
                    )
                )
            continue
        seen[article.key] = (number, article)
        result.articles.append(article)
    if problem:
        read = len(result.articles)
        count = f"{read} {'entry' if read == 1 else 'entries'} read"
        result.problems.insert(0, ArticleError(f"{label}: {problem}; {count}"))
    result.articles.sort(key=lambda article: article.published, reverse=True)
    return result


def feed_label(feed: FeedSettings) -> str:
    """How messages name a feed: its url, and its configured name if it has one."""
    return f"{feed.url} ({feed.name})" if feed.name else feed.url


# -- entries -------------------------------------------------------------------------------


def _draft(
    entry: Mapping[str, Any], *, feed: FeedSettings, source: str, base_url: str, now: datetime
) -> Draft | None:
    content = _content(entry)
    summary_detail = entry.get("summary_detail")
    if summary_detail and not summary_detail.get("value", "").strip():
        summary_detail = None
    url = absolute_url(entry.get("link") or "", base_url)
    raw_title = entry.get("title") or ""
    if not (raw_title.strip() or url or content or summary_detail):
        return None  # e.g. the unfinished last entry of a truncated feed

    body_detail = content or summary_detail
    raw_body = body_detail.get("value", "") if body_detail else ""
    summary = _detail_text(summary_detail) if summary_detail else ""
    return Draft(
        identity=Identity(
            guid=(entry.get("id") or "").strip(),
            scope=feed.url,
            url=url or "",
            content=f"{raw_title}\n{raw_body}",
        ),
        # Undated entries count from when they were first seen; a feed whose clock runs ahead
        # must not pin its entries to the top of every digest.
        published=min(_published(entry) or now, now),
        origin=feed.url,
        title=html_to_line(raw_title),
        summary=summary,
        body_html=(_detail_html(body_detail, base_url) if body_detail else None) or None,
        lead=_detail_text(content) if content else summary,
        url=url,
        source=source,
    )


def _content(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The entry's full content (content:encoded, atom:content), HTML preferred over text."""
    contents = [c for c in entry.get("content") or () if (c.get("value") or "").strip()]
    for detail in contents:
        if detail.get("type") in _HTML_TYPES:
            return detail
    return contents[0] if contents else None


def _detail_html(detail: Mapping[str, Any], base_url: str) -> str:
    base = detail.get("base") or base_url
    value = detail.get("value") or ""
    if detail.get("type") not in _HTML_TYPES:
        value = text_to_html(value)
    elif not nh3.is_html(value):  # "HTML" without a single tag: keep its paragraphs
        value = text_to_html(html.unescape(value))
    return sanitize_html(value, base_url=base)


def _detail_text(detail: Mapping[str, Any]) -> str:
    """Plain text of a detail on one line."""
    value = detail.get("value") or ""
    if detail.get("type") in _HTML_TYPES:
        return html_to_line(value)
    return collapse(value)


def _published(entry: Mapping[str, Any]) -> datetime | None:
    for name in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(name)
        if parsed:
            try:
                # feedparser gives a struct_time in UTC
                return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
            except (TypeError, ValueError, OverflowError, OSError):
                continue
    return None


# -- feed level ----------------------------------------------------------------------------


def _feed_title(feed: FeedSettings, parsed: Mapping[str, Any]) -> str:
    if feed.name:
        return feed.name
    title = html_to_line(parsed["feed"].get("title") or "")
    return title or urlsplit(feed.url).hostname or feed.url


def _xml_content_type(content_type: str | None) -> str:
    """What feedparser is told the media type is: XML, keeping only the server's charset.

    Servers label feeds text/html, text/plain or text/xml without a charset (which RFC 3023
    read as US-ASCII); none of that should make a good feed look broken. A charset given by
    the server still wins over the XML declaration, as the RFCs say.
    """
    match = _CHARSET.search(content_type or "")
    return f"application/xml; charset={match[1]}" if match else "application/xml"


def _bozo_problem(parsed: Mapping[str, Any]) -> str | None:
    exc = parsed.get("bozo_exception")
    if isinstance(exc, CharacterEncodingOverride | CharacterEncodingUnknown):
        return f"character encoding problem ({collapse(str(exc))})"
    if isinstance(exc, ThingsNobodyCaresAboutButMe):  # e.g. media type; harmless
        return None
    if isinstance(exc, xml.sax.SAXParseException):
        return f"malformed feed (line {exc.getLineNumber()}: {collapse(exc.getMessage())})"
    if exc is None:
        return "malformed feed"
    return f"malformed feed ({collapse(str(exc)) or type(exc).__name__})"


def _not_a_feed(data: bytes, problem: str | None) -> str:
    if _HTML_PAGE.match(data[:4096]):
        what = "got an HTML page"
    elif problem:
        what = problem
    else:
        what = "no RSS or Atom elements found"
    return f"not a readable RSS or Atom feed ({what}); check that the url points at the feed"
