"""Subscriber use cases: subscribe, confirm (double opt-in), unsubscribe, confirmation emails.

Links carry signed tokens (:mod:`newsletter.signing`) naming the subscriber's public id
(first-release links name a row id, kept as ``legacy_id``). ``unsubscribe`` tokens are in
every digest and never expire: they work as long as the email exists. ``confirm`` tokens are
mailed by :class:`ConfirmationSender`, expire after ``CONFIRM_MAX_AGE`` and work once (used
ones are recorded in ``used_tokens`` until they have expired anyway).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import smtplib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from newsletter.app.context import Context
from newsletter.delivery.dkim import make_signer
from newsletter.delivery.ratelimit import RateLimiter
from newsletter.delivery.smtp import SendFailure, classify, close_quietly, connect, send_message
from newsletter.errors import DeliveryError, TemplateError, TokenError
from newsletter.message import NAME_FALLBACK, Envelope, confirmation_message, fill_tokens
from newsletter.models import Subscriber, SubscriberState
from newsletter.personalization import TokenSet
from newsletter.render import inline_css, make_template_environment
from newsletter.render_text import collapse
from newsletter.store import subscribers as rows
from newsletter.store.schema import is_public_id, legacy_id_from
from newsletter.subscriber_import import ImportReport, OnReject, import_csv
from newsletter.subscriber_rules import clean_name, normalize_address
from newsletter.subscribers import add_subscriber

log = logging.getLogger(__name__)

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
CONFIRM_MAX_AGE = timedelta(days=7)
CONFIRM_SUBJECT = "confirm_email.subject.txt.j2"
CONFIRM_TEXT = "confirm_email.txt.j2"
CONFIRM_HTML = "confirm_email.html.j2"


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


def confirm_url(ctx: Context, public_id: str) -> str:
    """The signed double opt-in link for one subscriber (by public id)."""
    token = ctx.signer.make(CONFIRM, public_id, now=ctx.clock())
    return f"{ctx.settings.web.base_url}/confirm/{token}"


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
        moved = rows.set_state(
            conn,
            link.subscriber.id,
            SubscriberState.UNSUBSCRIBED,
            now=ctx.clock(),
            only_from=[SubscriberState.ACTIVE, SubscriberState.PENDING, SubscriberState.BOUNCED],
        )
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
        moved = first_use and rows.set_state(
            conn,
            link.subscriber.id,
            SubscriberState.ACTIVE,
            now=now,
            only_from=[SubscriberState.PENDING],
        )
        subscriber = rows.get_by_id(conn, link.subscriber.id)
    assert subscriber is not None
    if moved:
        log.info("subscriber %s confirmed their subscription", subscriber.id)
        return LinkResult(subscriber, Outcome.DONE)
    if not first_use or subscriber.state is SubscriberState.ACTIVE:
        return LinkResult(subscriber, Outcome.ALREADY)
    return LinkResult(subscriber, Outcome.STALE)


@dataclass(frozen=True)
class SubscribeResult:
    email: str
    mailed: bool  # False when the address is already active (nothing is sent)


def subscribe(ctx: Context, email: str, name: str = "") -> SubscribeResult:
    """A subscription request from the public: pending until the emailed link is clicked.

    An active address gets nothing (the answer to the visitor is the same either way, so
    the form does not reveal who is on the list). Any other address becomes pending and
    gets a fresh confirmation email. ``DeliveryError`` if it cannot be sent; when the SMTP
    server cannot be reached, nothing changes.
    """
    address = normalize_address(email)
    with ctx.store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
    if existing is not None and existing.state is SubscriberState.ACTIVE:
        return SubscribeResult(address, mailed=False)
    with ConfirmationSender(ctx).open() as sender:  # fail fast, before any change
        try:
            subscriber = _make_pending(ctx, address, name)
        except IntegrityError:  # the same new address arrived twice at once: it exists now
            subscriber = _make_pending(ctx, address, name)
        if subscriber.state is SubscriberState.ACTIVE:
            return SubscribeResult(address, mailed=False)
        problem = sender.send(subscriber)
    if problem:
        raise DeliveryError(f"the confirmation email to {address} was refused: {problem}")
    return SubscribeResult(address, mailed=True)


def _make_pending(ctx: Context, address: str, name: str) -> Subscriber:
    """Insert the address as pending, or refresh it unless it was confirmed meanwhile."""
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is None:
            rows.insert_many(
                conn, [(address, clean_name(name), {})], state=SubscriberState.PENDING, now=now
            )
        elif existing.state is not SubscriberState.ACTIVE:
            rows.update_pending(
                conn,
                existing.id,
                name=clean_name(name) or existing.name,
                attrs=existing.attrs,
                now=now,
            )
        subscriber = rows.get_by_email(conn, address)
    assert subscriber is not None
    return subscriber


@dataclass
class ConfirmationReport:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason)
    unsent: int = 0  # not tried: the SMTP server could not be reached any more
    stopped_by: str | None = None


class ConfirmationMailer:
    """Renders the confirmation email once (CSS inlined once), then fills it per address."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.tokens = TokenSet()
        env = make_template_environment(settings.digest.templates_dir)
        context: dict[str, Any] = {
            "newsletter": settings.newsletter,
            "subscriber": self.tokens.placeholder(),
            "confirm_url": self.tokens.token("confirm_url"),
            "expires_days": CONFIRM_MAX_AGE.days,
            "date": ctx.clock(),
            "web_base_url": settings.web.base_url,
        }
        self.subject = collapse(_render(env, CONFIRM_SUBJECT, context))
        self.text = _render(env, CONFIRM_TEXT, context)
        self.html = inline_css(_render(env, CONFIRM_HTML, context))
        self.dkim_sign = make_signer(
            settings.dkim, default_domain=str(settings.newsletter.from_address).rpartition("@")[2]
        )

    def envelope(self, subscriber: Subscriber) -> Envelope:
        values = {
            "name": subscriber.name or NAME_FALLBACK,
            "email": subscriber.email,
            "confirm_url": confirm_url(self.ctx, subscriber.public_id),
        }
        return confirmation_message(
            self.ctx.settings,
            to=subscriber.email,
            name=subscriber.name,
            subject=fill_tokens(self.subject, self.tokens, values, escape=False),
            html_body=fill_tokens(self.html, self.tokens, values, escape=True),
            text_body=fill_tokens(self.text, self.tokens, values, escape=False),
            now=self.ctx.clock(),
            dkim_sign=self.dkim_sign,
        )


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as exc:  # a user's template can fail in any way; one line says where
        raise TemplateError(f"{name}: {collapse(f'{type(exc).__name__}: {exc}')}") from exc


class ConfirmationSender:
    """Sends confirmation emails over one SMTP connection (reopened every ``reconnect_after``).

    ``open()`` connects at once so a caller can fail fast; ``send`` returns a refusal reason
    for one address, or raises ``DeliveryError`` when the server cannot be reached.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.mailer = ConfirmationMailer(ctx)
        self.report = ConfirmationReport()
        self._client: smtplib.SMTP | None = None
        self._on_client = 0
        self._rate = RateLimiter(ctx.settings.smtp.max_per_second, stop=threading.Event())

    def open(self) -> ConfirmationSender:
        if self._client is None:
            self.ctx.check_link_settings()  # no forgeable links in real mail
            self._client = connect(self.ctx.settings.smtp)
            self._on_client = 0
        return self

    def __enter__(self) -> ConfirmationSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        close_quietly(self._client)
        self._client = None

    def send(self, subscriber: Subscriber) -> str | None:
        try:
            envelope = self.mailer.envelope(subscriber)
        except ValueError as exc:  # this address or name cannot be put into a message
            return self._failed(subscriber, f"the message cannot be built: {exc}")
        self._rate.acquire()
        failure = self._try(envelope)
        if failure is not None and failure.connection_lost and not failure.permanent:
            failure = self._try(envelope)  # once more, on a fresh connection
        if failure is not None:
            return self._failed(subscriber, failure.reason)
        self.report.sent += 1
        return None

    def _failed(self, subscriber: Subscriber, reason: str) -> str:
        self.report.failed.append((subscriber.email, reason))
        log.warning("confirmation email to %s failed: %s", subscriber.email, reason)
        return reason

    def _try(self, envelope: Envelope) -> SendFailure | None:
        if self._on_client >= self.ctx.settings.smtp.reconnect_after:
            self.close()
        client = self.open()._client
        assert client is not None
        try:
            send_message(
                client,
                envelope.sender,
                envelope.recipient,
                envelope.data,
                smtputf8=envelope.smtputf8,
            )
        except (OSError, smtplib.SMTPException) as exc:
            failure = classify(exc, envelope.recipient)
            if failure.connection_lost:
                self.close()
            return failure
        except ValueError as exc:  # an address smtplib cannot encode: mid-transaction, so
            self.close()  # start the next message on a fresh connection
            return SendFailure(
                permanent=True, reason=f"cannot be sent: {exc}", connection_lost=True
            )
        self._on_client += 1
        return None

    def send_many(self, subscribers: Iterable[Subscriber]) -> None:
        """Send to each; once the server is unreachable, count the rest as unsent."""
        for subscriber in subscribers:
            if self.report.stopped_by is not None:
                self.report.unsent += 1
                continue
            try:
                self.send(subscriber)
            except DeliveryError as exc:
                self.report.stopped_by = str(exc)
                self.report.unsent += 1


def add(ctx: Context, email: str, name: str = "", *, double_opt_in: bool = False) -> Subscriber:
    """``subscribers add``: active at once, or pending with a confirmation email sent."""
    sender = ConfirmationSender(ctx).open() if double_opt_in else None  # fail fast
    try:
        added = add_subscriber(ctx.store, email, name, now=ctx.clock(), double_opt_in=double_opt_in)
        if sender is not None:
            problem = sender.send(added)
            if problem:
                raise DeliveryError(
                    f"{added.email} is pending, but the confirmation email was refused: {problem}"
                )
    finally:
        if sender is not None:
            sender.close()
    return added


def import_subscribers(
    ctx: Context,
    path: Path,
    *,
    double_opt_in: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_reject: OnReject | None = None,
) -> tuple[ImportReport, ConfirmationReport | None]:
    """``subscribers import``; with double opt-in, each new address gets a confirmation email.

    The emails go out batch by batch, after each batch is committed, over one connection.
    ``on_reject`` gets every rejected row (the report keeps only the first few).
    """
    if not double_opt_in:
        report = import_csv(
            ctx.store, path, now=ctx.clock(), on_progress=on_progress, on_reject=on_reject
        )
        return report, None
    with ConfirmationSender(ctx).open() as sender:  # fail fast: nothing imported yet
        report = import_csv(
            ctx.store,
            path,
            now=ctx.clock(),
            double_opt_in=True,
            on_progress=on_progress,
            on_batch=sender.send_many,
            on_reject=on_reject,
        )
    return report, sender.report
