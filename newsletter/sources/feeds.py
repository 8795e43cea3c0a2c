"""Articles from RSS 0.9x/1.0/2.0 and Atom feeds.

Two steps, kept apart so each can be tested alone:

- :func:`fetch_feed` downloads one feed with httpx (timeouts, size limit, redirect limit,
  conditional GET) and never raises for network or parse problems: a feed that cannot be read
  comes back with ``error`` set, and the other feeds go on.
- :func:`parse_feed` turns the downloaded bytes into ``Article``s with feedparser; entry HTML is
  untrusted and goes through :func:`~newsletter.sources.sanitize.sanitize_html`.

Which articles are new, and how many per feed go out, is decided later (store, selection).
"""

from __future__ import annotations

import calendar
import hashlib
import html
import io
import logging
import re
import time
import xml.sax
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx
import nh3
from feedparser.exceptions import (
    CharacterEncodingOverride,
    CharacterEncodingUnknown,
    ThingsNobodyCaresAboutButMe,
)

from newsletter import __version__
from newsletter.config import FeedSettings, SourcesSettings
from newsletter.errors import SourceError
from newsletter.models import Article
from newsletter.sources.sanitize import absolute_url, html_to_text, sanitize_html, text_to_html

logger = logging.getLogger(__name__)

SUMMARY_MAX_CHARS = 300
TITLE_FROM_SUMMARY_MAX_CHARS = 80
UNTITLED = "(untitled)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_HTML_PAGE = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S)


@dataclass(frozen=True)
class FeedState:
    """HTTP validators from the last successful download, for a conditional GET next time."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FeedResult:
    feed: FeedSettings
    articles: list[Article]
    state: FeedState  # validators to store: new ones after a read, the previous ones otherwise
    not_modified: bool  # the server answered 304: nothing new, nothing to parse
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # one line when the feed could not be read at all


def fetch_feeds(
    settings: SourcesSettings,
    *,
    previous: Mapping[str, FeedState],
    now: datetime,
    client: httpx.Client | None = None,
) -> list[FeedResult]:
    """Fetch every configured feed in order; ``previous`` holds stored states by feed URL.

    Without ``client`` a client is created for the run and closed afterwards.
    """
    own_client = client is None
    http = client if client is not None else httpx.Client()
    try:
        return [
            fetch_feed(
                feed, client=http, previous=previous.get(feed.url), now=now, settings=settings
            )
            for feed in settings.feeds
        ]
    finally:
        if own_client:
            http.close()


def fetch_feed(
    feed: FeedSettings,
    *,
    client: httpx.Client,
    previous: FeedState | None,
    now: datetime,
    settings: SourcesSettings,
) -> FeedResult:
    """Download and parse one feed. Network and parse problems come back as ``error``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    state = previous or FeedState()
    label = _label(feed)
    try:
        download = _download(feed.url, client=client, state=state, settings=settings)
    except _FetchError as exc:
        logger.warning("%s", f"{label}: {exc}")
        return FeedResult(feed, [], state, not_modified=False, error=f"{label}: {exc}")
    if download is None:
        logger.info("Feed %r not modified", feed.url)
        return FeedResult(feed, [], state, not_modified=True)
    try:
        articles, warnings = parse_feed(
            download.body,
            feed=feed,
            base_url=download.url,
            now=now,
            content_type=download.content_type,
        )
    except SourceError as exc:
        logger.warning("%s", exc)
        return FeedResult(feed, [], state, not_modified=False, error=str(exc))
    except Exception as exc:  # feedparser on hostile input: one feed must not stop the run
        logger.exception("Unexpected error parsing feed %r", feed.url)
        error = f"{label}: cannot parse the feed ({_one_line(repr(exc))}); please report this bug"
        return FeedResult(feed, [], state, not_modified=False, error=error)
    for warning in warnings:
        logger.warning("%s", warning)
    logger.info("Feed %r: %d entries", feed.url, len(articles))
    new_state = FeedState(etag=download.etag, last_modified=download.last_modified)
    moved = [f"{label}: {warning}" for warning in download.warnings]
    return FeedResult(feed, articles, new_state, False, moved + warnings)


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
    label = _label(feed)
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
            warnings.append(f"{label}: entry {number} skipped ({_one_line(repr(exc))})")
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
        published=_published(entry) or now,
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
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " " and " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-–—") + "…"


def _first_sentences(text: str, limit: int) -> str:
    """As many whole leading sentences of ``text`` as fit in ``limit`` characters."""
    summary = ""
    for sentence in _SENTENCE_END.split(text):
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > limit:
            break
        summary = candidate
    return summary or _shorten(text, limit)


# -- feed level ----------------------------------------------------------------------------


def _label(feed: FeedSettings) -> str:
    return f"{feed.url} ({feed.name})" if feed.name else feed.url


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
        return f"character encoding problem ({_one_line(str(exc))})"
    if isinstance(exc, ThingsNobodyCaresAboutButMe):  # e.g. media type; harmless
        return None
    if isinstance(exc, xml.sax.SAXParseException):
        return f"malformed feed (line {exc.getLineNumber()}: {_one_line(exc.getMessage())})"
    if exc is None:
        return "malformed feed"
    return f"malformed feed ({_one_line(str(exc)) or type(exc).__name__})"


def _not_a_feed(data: bytes, problem: str | None) -> str:
    if _HTML_PAGE.match(data[:4096]):
        what = "got an HTML page"
    elif problem:
        what = problem
    else:
        what = "no RSS or Atom elements found"
    return f"not a readable RSS or Atom feed ({what}); check that the url points at the feed"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- HTTP ----------------------------------------------------------------------------------


class _FetchError(Exception):
    """The feed could not be downloaded; the message says what to check."""


@dataclass(frozen=True)
class _Download:
    url: str  # after redirects
    body: bytes
    content_type: str | None
    etag: str | None
    last_modified: str | None
    warnings: list[str]


def _download(
    url: str, *, client: httpx.Client, state: FeedState, settings: SourcesSettings
) -> _Download | None:
    """GET ``url`` within the limits in ``settings``; None when the server answers 304."""
    if not _is_http(url):
        raise _FetchError("not an http(s) url; check the feed url in the config")
    headers = {
        "User-Agent": settings.user_agent or f"newsletter/{__version__} (+feed digest)",
        "Accept": ACCEPT,
    }
    if state.etag:
        headers["If-None-Match"] = state.etag
    if state.last_modified:
        headers["If-Modified-Since"] = state.last_modified
    timeout = settings.fetch_timeout
    deadline = time.monotonic() + timeout
    moved_permanently = False
    feed_url = url
    try:
        for hop in range(settings.max_redirects + 1):
            request = client.build_request("GET", url, headers=headers, timeout=timeout)
            response = client.send(request, stream=True, follow_redirects=False)
            try:
                if response.next_request is not None:  # a redirect with a usable Location
                    url = str(response.next_request.url)
                    if not _is_http(url):
                        raise _FetchError(
                            f"redirected to {url}, which is not an http(s) url; check the feed url"
                        )
                    moved_permanently |= hop == 0 and response.status_code in (301, 308)
                    continue
                if response.status_code == 304:
                    return None
                if not response.is_success:
                    answer = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                    where = f" from {url}" if url != feed_url else ""
                    raise _FetchError(
                        f"{answer}{where}; check the url, or whether the site is down"
                    )
                body = _read_body(
                    response,
                    limit=settings.max_feed_bytes,
                    deadline=deadline,
                    deadline_seconds=timeout,
                )
                final_url = str(response.url)
                return _Download(
                    url=final_url,
                    body=body,
                    content_type=response.headers.get("content-type"),
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                    warnings=[
                        f"moved permanently to {final_url}; update the feed url in the config"
                    ]
                    if moved_permanently
                    else [],
                )
            finally:
                response.close()
    except httpx.TimeoutException:
        raise _FetchError(
            f"no answer within {timeout:g} s; check that the site is up, "
            "or raise sources.fetch_timeout"
        ) from None
    except httpx.InvalidURL as exc:
        raise _FetchError(
            f"not a valid url ({_one_line(str(exc))}); check the feed url in the config"
        ) from None
    except httpx.DecodingError as exc:
        raise _FetchError(
            f"cannot decode the response ({_one_line(str(exc))}); the server sent a broken body"
        ) from None
    except httpx.HTTPError as exc:  # connection refused, DNS, TLS, protocol errors
        raise _FetchError(
            f"download failed ({_one_line(str(exc)) or type(exc).__name__}); "
            "check the url and your network"
        ) from None
    raise _FetchError(
        f"more than {settings.max_redirects} redirects (last to {url}); "
        "check the url or raise sources.max_redirects"
    )


def _is_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _read_body(
    response: httpx.Response, *, limit: int, deadline: float, deadline_seconds: float
) -> bytes:
    """The decoded body, refused as soon as it grows past ``limit`` bytes or the deadline."""
    too_big = (
        f"response is larger than the sources.max_feed_bytes limit of {limit:,} bytes; "
        "check the url or raise the limit"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _FetchError(f"{too_big} (Content-Length: {int(declared):,})")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise _FetchError(too_big)
        if time.monotonic() > deadline:
            raise _FetchError(
                f"download took longer than {deadline_seconds:g} s; check that the site is up, "
                "or raise sources.fetch_timeout"
            )
        chunks.append(chunk)
    return b"".join(chunks)
