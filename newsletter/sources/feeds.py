"""Articles from RSS 0.9x/1.0/2.0 and Atom feeds: the API the rest of the program calls.

Two steps, kept apart so each can be tested alone:

- :func:`fetch_feed` downloads one feed with httpx (timeouts, size limit, redirect limit,
  conditional GET) and never raises for network or parse problems: a feed that cannot be read
  comes back with ``error`` set, and the other feeds go on. The download lives here.
- :func:`parse_feed` turns the downloaded bytes into ``Article``s with feedparser; it lives in
  :mod:`newsletter.sources.feed_entries` and is re-exported here.

Which articles are new, and how many per feed go out, is decided later (store, selection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from newsletter import __version__
from newsletter.config import FeedSettings, SourcesSettings
from newsletter.errors import SourceError
from newsletter.models import Article
from newsletter.sources.feed_entries import feed_label, parse_feed
from newsletter.text import collapse, is_http_url

__all__ = ["ACCEPT", "FeedResult", "FeedState", "fetch_feed", "fetch_feeds", "parse_feed"]

logger = logging.getLogger(__name__)

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)


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
    label = feed_label(feed)
    try:
        download = _download(feed.url, client=client, state=state, settings=settings)
    except _FetchError as exc:
        logger.warning("%s", f"{label}: {exc}")
        return FeedResult(feed, [], state, not_modified=False, error=f"{label}: {exc}")
    if download is None:
        logger.info("Feed %r not modified", feed.url)
        return FeedResult(feed, [], state, not_modified=True)
    try:
        parsed = parse_feed(
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
        error = f"{label}: cannot parse the feed ({collapse(repr(exc))}); please report this bug"
        return FeedResult(feed, [], state, not_modified=False, error=error)
    for problem in parsed.problems:
        logger.warning("%s", problem)
    logger.info("Feed %r: %d entries", feed.url, len(parsed.articles))
    new_state = FeedState(etag=download.etag, last_modified=download.last_modified)
    moved = [f"{label}: {warning}" for warning in download.warnings]
    problems = [str(problem) for problem in parsed.problems]
    return FeedResult(feed, parsed.articles, new_state, False, moved + problems)


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
    if not is_http_url(url):
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
                    if not is_http_url(url):
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
            f"not a valid url ({collapse(str(exc))}); check the feed url in the config"
        ) from None
    except httpx.DecodingError as exc:
        raise _FetchError(
            f"cannot decode the response ({collapse(str(exc))}); the server sent a broken body"
        ) from None
    except httpx.HTTPError as exc:  # connection refused, DNS, TLS, protocol errors
        raise _FetchError(
            f"download failed ({collapse(str(exc)) or type(exc).__name__}); "
            "check the url and your network"
        ) from None
    raise _FetchError(
        f"more than {settings.max_redirects} redirects (last to {url}); "
        "check the url or raise sources.max_redirects"
    )


def _read_body(
    response: httpx.Response, *, limit: int, deadline: float, deadline_seconds: float
) -> bytes:
    """The decoded body, refused as soon as it grows past ``limit`` bytes or the deadline."""
    too_big = (
        f"response is larger than the sources.max_feed_bytes limit of {limit:,} bytes; "
        "check the url or raise the limit"
    )
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
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
