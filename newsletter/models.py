"""Small data types the pipeline stages meet through. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

# What every stage that needs the time is given: ``clock()`` returns an aware UTC datetime.
# Tests pass a frozen one; nothing reads the wall clock deep inside the logic.
Clock = Callable[[], datetime]


# Permanent replies that say the mailbox itself is gone (RFC 3463 enhanced status codes):
# 5.1.1 bad mailbox, 5.1.10 null MX, 5.2.1 mailbox disabled. Other permanent refusals (policy,
# spam filters, content, our own reputation: 5.7.x and the like) fail one delivery and say
# nothing about the address. The one rule for a hard bounce, whether the reply comes at SMTP
# time (subscribers.lifecycle) or later in a bounce report (bounces.classify).
HARD_BOUNCE_CODES = ("5.1.1", "5.1.10", "5.2.1")


class SubscriberState(enum.StrEnum):
    PENDING = "pending"  # awaiting double opt-in confirmation
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class DigestState(enum.StrEnum):
    SENDING = "sending"  # outbox created, deliveries still pending
    SENT = "sent"  # every delivery is sent or failed, and at least one was sent
    PAUSED = "paused"  # stopped after too many consecutive failures; resumable
    FAILED = "failed"  # finished and nobody received it; its articles go to the next digest


class MailingKind(enum.StrEnum):
    """What a mailing (a row of the digests table, with its outbox) is."""

    DIGEST = "digest"
    CONFIRMATION = "confirmation"  # double opt-in emails: to pending subscribers, no articles


@dataclass(frozen=True)
class Article:
    """One article, from a file or a feed, already cleaned of page boilerplate.

    ``key`` is the stable identity used for dedupe across runs and sources.
    At most one of ``paragraphs`` (plain text) and ``body_html`` (sanitized) carries the body;
    a one-sentence article may be all headline.
    """

    key: str
    title: str
    published: datetime  # timezone-aware, UTC
    summary: str
    paragraphs: tuple[str, ...] = ()
    body_html: str | None = None
    url: str | None = None
    source: str | None = None  # agency credit or feed name
    tags: tuple[str, ...] = ()
    origin: str = ""  # file path or feed URL, for messages and per-source sections


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    state: SubscriberState = SubscriberState.ACTIVE
    attrs: dict[str, str] = field(default_factory=dict)
    public_id: str = ""  # what links name (random, kept by export/import); never the row id


@dataclass(frozen=True)
class Recipient:
    """What the delivery stage needs to personalize one message."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    public_id: str = ""  # for the unsubscribe link; "" when not on the list (a test copy)


class SizeStep(enum.StrEnum):
    """How far a digest was reduced to stay under ``[digest] max_html_bytes``."""

    FULL = "full"  # every article as the template shows it, full texts included
    SUMMARIES = "summaries"  # summaries and links instead of full texts
    HEADLINES = "headlines"  # the oldest articles as headline and link only
    CARRIED_OVER = "carried over"  # some articles left for the next digest


@dataclass(frozen=True)
class RenderedDigest:
    """The digest rendered and CSS-inlined once; personal fields are still tokens.

    ``article_keys`` are the articles the digest carries, in order; ``carried_over`` the
    selected ones left out to stay under the size limit (they stay new for the next digest).
    """

    subject: str
    preheader: str
    html: str
    text: str
    article_keys: tuple[str, ...]
    summaries_only: bool = False  # True when some articles were reduced to fit the size limit
    size_step: SizeStep = SizeStep.FULL
    carried_over: tuple[str, ...] = ()  # keys of selected articles left out for size
