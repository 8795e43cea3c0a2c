"""The signed links in emails: unsubscribe, and confirm a subscription (double opt-in).

Links carry signed tokens (:mod:`newsletter.signing`, made by ``Context.unsubscribe_url``
and ``Context.confirm_url``) naming the subscriber's public id (first-release links name a
row id, kept as ``legacy_id``). ``unsubscribe`` tokens are in every digest and never expire:
they work as long as the email exists. ``confirm`` tokens are in confirmation emails, expire
after ``CONFIRM_MAX_AGE`` and work once (used ones are recorded in ``used_tokens`` until they
have expired anyway). The state changes are :mod:`newsletter.subscribers.lifecycle`'s.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection

from newsletter.app.context import Context
from newsletter.errors import TokenError
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import subscribers as rows
from newsletter.store.schema import is_public_id, legacy_id_from
from newsletter.subscribers import lifecycle

log = logging.getLogger(__name__)

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
CONFIRM_MAX_AGE = timedelta(days=7)


class LinkExpired(TokenError):
    """A genuine link that is too old to use."""


class Outcome(enum.StrEnum):
    DONE = "done"  # this request changed the subscriber's state
    ALREADY = "already"  # nothing to do: already unsubscribed, or the link was used before
    STALE = "stale"  # a confirmation link for an address that has left the list since


@dataclass(frozen=True)
class LinkResult:
    subscriber: Subscriber
    outcome: Outcome


@dataclass(frozen=True)
class Link:
    """A checked link: whose it is, and whether a one-time link was used before."""

    subscriber: Subscriber
    token_id: str
    used: bool = False


def _named_subscriber(conn: Connection, subject: str) -> Subscriber | None:
    """Whom a link names: a public id, or a first-release row id (kept as ``legacy_id``)."""
    if subject.isdigit():
        legacy_id = legacy_id_from(subject)
        return rows.get_by_legacy_id(conn, legacy_id) if legacy_id is not None else None
    return rows.get_by_public_id(conn, subject) if is_public_id(subject) else None


def open_link(ctx: Context, token: str, purpose: str) -> Link:
    """Check a link token; ``TokenError`` (``LinkExpired`` when only too old) for a bad one.

    Unsubscribe links never expire; confirmation links expire after ``CONFIRM_MAX_AGE``.
    """
    now = ctx.clock()
    signer = ctx.unsubscribe_signer if purpose == UNSUBSCRIBE else ctx.signer
    subject, issued = signer.read(token, purpose)
    if purpose == CONFIRM and now - issued > CONFIRM_MAX_AGE:
        raise LinkExpired("this link has expired; subscribe again")
    token_id = f"{purpose}:{hashlib.sha256(token.encode()).hexdigest()[:40]}"
    with ctx.store.atomic() as conn:
        subscriber = _named_subscriber(conn, subject)
        used = purpose == CONFIRM and rows.token_was_used(conn, token_id)
    if subscriber is None:
        raise TokenError("this link is not valid (the address is no longer on the list)")
    return Link(subscriber, token_id, used)


def unsubscribe(ctx: Context, token: str) -> LinkResult:
    """Unsubscribe the link's owner; unsubscribing twice is fine (``Outcome.ALREADY``)."""
    link = open_link(ctx, token, UNSUBSCRIBE)
    with ctx.store.atomic() as conn:
        moved = lifecycle.unsubscribe(conn, link.subscriber.id, now=ctx.clock())
        subscriber = rows.get_by_id(conn, link.subscriber.id)
    assert subscriber is not None
    if moved:
        log.info("subscriber %s unsubscribed by link", subscriber.id)
    return LinkResult(subscriber, Outcome.DONE if moved else Outcome.ALREADY)


def confirm(ctx: Context, token: str) -> LinkResult:
    """Make a pending subscriber active. Each link works once; a replay changes nothing."""
    link = open_link(ctx, token, CONFIRM)
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        rows.forget_tokens_used_before(conn, now - CONFIRM_MAX_AGE)  # expired by now anyway
        first_use = rows.claim_token(conn, link.token_id, now=now)
        moved = first_use and lifecycle.confirm(
            conn, link.subscriber.id, now=now, suppressions=ctx.suppressions
        )
        subscriber = rows.get_by_id(conn, link.subscriber.id)
    assert subscriber is not None
    if moved:
        log.info("subscriber %s confirmed their subscription", subscriber.id)
        return LinkResult(subscriber, Outcome.DONE)
    if not first_use or subscriber.state is SubscriberState.ACTIVE:
        return LinkResult(subscriber, Outcome.ALREADY)
    return LinkResult(subscriber, Outcome.STALE)
