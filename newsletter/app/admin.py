"""What the operator's admin pages show and do: the dashboard, the subscribers, one digest.

Reads only, except ``add_subscriber``/``unsubscribe`` (the same rules as the CLI) and
``retry_failed`` (``newsletter resend DIGEST --failed``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

from newsletter.app import slots, subscriber_list, subscriptions
from newsletter.app.archive import MAX_DIGEST_ID
from newsletter.app.context import Context
from newsletter.app.resend import ResendSummary, resend_failed
from newsletter.app.status import DigestStatus, digest_status
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import digest_reports
from newsletter.store import digests as digest_rows
from newsletter.store import feeds as feed_rows
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.slots import SlotRun
from newsletter.store.subscriber_search import SubscriberLine, subscriber_page

# A feed not fetched successfully for this long is flagged on the dashboard.
FEED_STALE_AFTER = timedelta(days=2)
PAGE_SIZE = 50

NextRun = Callable[[datetime], datetime | None]


@dataclass(frozen=True)
class FeedHealth:
    name: str
    url: str
    last_fetched: datetime | None
    stale: bool


@dataclass(frozen=True)
class Dashboard:
    digests: list[DigestStatus]  # with their hard-bounce and complaint rates
    subscribers: dict[str, int]
    next_run: datetime | None
    recent_slots: list[SlotRun]
    feeds: list[FeedHealth]


def dashboard(ctx: Context, *, next_run: NextRun | None = None, digests: int = 10) -> Dashboard:
    """The last digests with deliveries per state and bounce and complaint rates, the list's
    size per state, the next scheduled run and how each feed fared lately."""
    now = ctx.clock()
    recent = digest_status(ctx, limit=digests)
    with ctx.store.atomic() as conn:
        counts = subscriber_rows.count_by_state(conn)
        fetched = feed_rows.last_fetched(conn)
    feeds = [
        FeedHealth(
            feed.name or feed.url,
            feed.url,
            fetched.get(feed.url),
            feed.url not in fetched or now - fetched[feed.url] > FEED_STALE_AFTER,
        )
        for feed in ctx.settings.sources.feeds
    ]
    return Dashboard(
        recent,
        {state.value: counts.get(state.value, 0) for state in SubscriberState},
        next_run(now) if next_run else None,
        slots.recent_slots(ctx, limit=3),
        feeds,
    )


@dataclass(frozen=True)
class SubscriberPage:
    """One page of the list, newest first; the cursors of the neighbouring pages (None: none)."""

    lines: list[SubscriberLine]
    older: int | None  # ?before=<id> for the next (older) page
    newer: int | None  # ?after=<id> for the previous (newer) page


def subscribers_page(
    ctx: Context,
    *,
    query: str = "",
    state: SubscriberState | None = None,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> SubscriberPage:
    """Subscribers matching ``query`` (in address or name) and ``state``, by keyset."""
    with ctx.store.atomic() as conn:
        lines, more = subscriber_page(
            conn, query=query, state=state, before_id=before, after_id=after, limit=limit
        )
    if not lines:
        return SubscriberPage([], None, None)
    walking_back = after is not None
    older = lines[-1].id if (more if not walking_back else True) else None
    newer = lines[0].id if (more if walking_back else before is not None) else None
    return SubscriberPage(lines, older, newer)


def add_subscriber(ctx: Context, email: str, name: str) -> Subscriber:
    """Add an address as active (the operator vouches for consent), as ``subscribers add``."""
    return subscriptions.add(ctx, email, name).subscriber


def unsubscribe(ctx: Context, email: str) -> tuple[str, bool]:
    """Unsubscribe an address, as ``subscribers remove``: its form, and False if it already was."""
    return subscriber_list.remove(ctx, email)


def export(ctx: Context, out: TextIO) -> int:
    """The whole list as CSV, as ``subscribers export``."""
    return subscriber_list.export(ctx, out)


@dataclass(frozen=True)
class DigestDetail:
    digest: digest_rows.StoredDigest
    counts: dict[str, int]
    articles: list[digest_reports.CarriedArticle]
    failed: list[digest_reports.FailedDelivery] = field(default_factory=list)
    more_failed_after: int | None = None  # ?failed_after=<id> for the next failed ones


def digest_detail(
    ctx: Context, digest_id: int, *, failed_after: int = 0, limit: int = PAGE_SIZE
) -> DigestDetail | None:
    """A digest's articles, deliveries per state and failed deliveries with the SMTP reply."""
    if not 0 < digest_id <= MAX_DIGEST_ID:
        return None
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
        if digest is None:
            return None
        counts = digest_rows.delivery_counts(conn, [digest_id])[digest_id]
        carried = digest_reports.digest_articles_of(conn, digest_id)
        failed = digest_reports.failed_deliveries(
            conn, digest_id, after_id=failed_after, limit=limit + 1
        )
    more = failed[limit - 1].id if len(failed) > limit else None
    return DigestDetail(digest, counts, carried, failed[:limit], more)


def retry_failed(ctx: Context, digest_id: int) -> ResendSummary:
    """Queue the failed deliveries of a digest again and send them (``resend --failed``)."""
    return resend_failed(ctx, digest_id)
