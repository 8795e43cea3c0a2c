"""A downloaded RSS 0.9x/1.0/2.0 or Atom document turned into ``Article``s.

:func:`parse_feed` reads the bytes with feedparser and normalizes each entry: title, date,
stable key, summary and sanitized body. Entry HTML is untrusted and goes through
:func:`~newsletter.sources.sanitize.sanitize_html`. Downloading is
:mod:`newsletter.sources.feeds`' job.
"""

from __future__ import annotations

import calendar
import hashlib
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
from newsletter.errors import SourceError
from newsletter.models import Article
from newsletter.sources.sanitize import absolute_url, html_to_text, sanitize_html, text_to_html
from newsletter.sources.scraped import shorten

SUMMARY_MAX_CHARS = 300
TITLE_FROM_SUMMARY_MAX_CHARS = 80
UNTITLED = "(untitled)"

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_HTML_PAGE = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S)
# Stripped before the ellipsis of a cut summary or title; unlike scraped text, this drops a
# sentence's final period too ("storm…", not "storm.…").
_DROP_BEFORE_ELLIPSIS = " ,;:.-–—"


def parse_feed(
    data: bytes,
    *,
    feed: FeedSettings,
    base_url: str,
    now: datetime,
    content_type: str | None = None,
) -> tuple[list[Article], list[str]]:
    """Articles from one downloaded feed document, newest first, plus warnings.

    ``base_url`` is where the document was fetched from (relative links are resolved against
    it); ``now`` (timezone-aware) dates entries that carry no date. A malformed feed yields the
    entries that could be read and a warning. Raises ``SourceError`` when nothing could be
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
    articles: list[Article] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for number, entry in enumerate(parsed.entries, start=1):
        try:
            article = _article(entry, feed=feed, source=source, base_url=base_url, now=now)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            warnings.append(f"{label}: entry {number} skipped ({one_line(repr(exc))})")
            continue
        if article is None or article.key in seen:
            continue
        seen.add(article.key)
        articles.append(article)
    if problem:
        count = f"{len(articles)} {'entry' if len(articles) == 1 else 'entries'} read"
        warnings.insert(0, f"{label}: {problem}; {count}")
    articles.sort(key=lambda article: article.published, reverse=True)
    return articles, warnings


def feed_label(feed: FeedSettings) -> str:
    """How messages name a feed: its url, and its configured name if it has one."""
    return f"{feed.url} ({feed.name})" if feed.name else feed.url


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


# -- entries -------------------------------------------------------------------------------


def _article(
    entry: Mapping[str, Any], *, feed: FeedSettings, source: str, base_url: str, now: datetime
) -> Article | None:
    content = _content(entry)
    summary_detail = entry.get("summary_detail")
    if summary_detail and not summary_detail.get("value", "").strip():
        summary_detail = None
    url = absolute_url(entry.get("link") or "", base_url)
    raw_title = entry.get("title") or ""
    if not (raw_title.strip() or url or content or summary_detail):
        return None  # e.g. the unfinished last entry of a truncated feed

    body_detail = content or summary_detail
    body_html = _detail_html(body_detail, base_url) if body_detail else None
    if summary_detail:
        summary = _shorten(_detail_text(summary_detail), SUMMARY_MAX_CHARS)
    elif content:
        summary = _first_sentences(_detail_text(content), SUMMARY_MAX_CHARS)
    else:
        summary = ""
    title = html_to_text(raw_title) or _shorten(summary, TITLE_FROM_SUMMARY_MAX_CHARS) or UNTITLED
    raw_body = body_detail.get("value", "") if body_detail else ""
    return Article(
        key=_key(entry, url, raw_title, raw_body),
        title=title,
        # Undated entries count from when they were first seen; a feed whose clock runs ahead
        # must not pin its entries to the top of every digest.
        published=min(_published(entry) or now, now),
        summary=summary,
        body_html=body_html or None,
        url=url,
        source=source,
        origin=feed.url,
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
    """Plain text of a detail, whitespace collapsed to single spaces (``_shorten`` relies on it)."""
    value = detail.get("value") or ""
    if detail.get("type") in _HTML_TYPES:
        return html_to_text(value)
    return " ".join(value.split())


def _key(entry: Mapping[str, Any], url: str | None, raw_title: str, raw_body: str) -> str:
    guid = (entry.get("id") or "").strip()
    if guid:
        return f"id:{guid}"
    if url:
        return f"url:{url}"
    digest = hashlib.sha256(f"{raw_title}\n{raw_body}".encode()).hexdigest()
    return f"hash:{digest[:32]}"


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


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis."""
    return shorten(text, limit, drop_trailing=_DROP_BEFORE_ELLIPSIS)


def _first_sentences(text: str, limit: int) -> str:
    """As many whole leading sentences of ``text`` as fit in ``limit`` characters.

    Not :func:`~newsletter.sources.scraped.summarize`: that keeps at most two sentences and
    knows abbreviations; feeds have always kept as many sentences as fit.
    """
    summary = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > limit:
            break
        summary = candidate
    return summary or _shorten(text, limit)


# -- feed level ----------------------------------------------------------------------------


def _feed_title(feed: FeedSettings, parsed: Mapping[str, Any]) -> str:
    if feed.name:
        return feed.name
    title = html_to_text(parsed["feed"].get("title") or "")
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
        return f"character encoding problem ({one_line(str(exc))})"
    if isinstance(exc, ThingsNobodyCaresAboutButMe):  # e.g. media type; harmless
        return None
    if isinstance(exc, xml.sax.SAXParseException):
        return f"malformed feed (line {exc.getLineNumber()}: {one_line(exc.getMessage())})"
    if exc is None:
        return "malformed feed"
    return f"malformed feed ({one_line(str(exc)) or type(exc).__name__})"


def _not_a_feed(data: bytes, problem: str | None) -> str:
    if _HTML_PAGE.match(data[:4096]):
        what = "got an HTML page"
    elif problem:
        what = problem
    else:
        what = "no RSS or Atom elements found"
    return f"not a readable RSS or Atom feed ({what}); check that the url points at the feed"
