"""Confirmation emails (double opt-in): queued, then delivered by the digests' outbox.

A confirmation email is a mailing of kind ``confirmation`` (:mod:`newsletter.store.mailings`):
rendered once from the ``confirm_email.*`` templates with the personal fields as tokens
(``confirm_url`` is one of them), with one delivery per address, committed in the same
transaction as the state change that asks for it. The delivery engine sends it like a digest
(crash safety, retries, DKIM, international addresses), without List-Unsubscribe fields.

Public sign-ups are only recorded when they arrive (``app.subscriptions.record_signup``:
the same work for every address, member or not). :func:`deliver_confirmations` turns the
queued requests into pending subscribers and one mailing, at most ``MAX_PER_HOUR`` and
``MAX_PER_DAY`` confirmation emails per address, then delivers every unfinished confirmation
mailing. ``newsletter serve`` runs it in a background thread (:class:`ConfirmationQueue`);
``send-now``, ``run`` and ``subscribers add/import --double-opt-in`` run it too, so whatever
an interrupted process left is sent by the next one, once. One process at a time delivers
confirmations, under a lock row of their own (a digest's send does not hold them up).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jinja2
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from newsletter.app.context import Context
from newsletter.app.links import CONFIRM_MAX_AGE
from newsletter.app.send import checked_connector, deliver_digest
from newsletter.app.send_lock import SendLock, send_lock
from newsletter.app.senders import SenderPresence
from newsletter.delivery.report import SendReport
from newsletter.errors import NewsletterError, SendInProgress, TemplateError
from newsletter.models import MailingKind, Subscriber, SubscriberState
from newsletter.personalization import CONFIRM_URL_FIELD, TokenSet
from newsletter.render import inline_css, make_template_environment
from newsletter.render_text import collapse
from newsletter.store import digests as digest_rows
from newsletter.store import mailings, outbox
from newsletter.store import signup_requests as request_rows
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers import lifecycle

log = logging.getLogger(__name__)

CONFIRM_SUBJECT = "confirm_email.subject.txt.j2"
CONFIRM_TEXT = "confirm_email.txt.j2"
CONFIRM_HTML = "confirm_email.html.j2"
CONFIRMATION = MailingKind.CONFIRMATION
CONFIRMATION_LOCK = "confirmations"  # a lock row of their own, beside the digests' send lock
# Per address: a mail bomb through the sign-up form gets its victim one email an hour, a few
# a day, whoever sends the requests and from wherever.
MAX_PER_HOUR = 1
MAX_PER_DAY = 3
REQUEST_BATCH = 500  # sign-up requests turned into one mailing per transaction
MAX_BATCHES = 20  # per call: a flood of requests does not keep one call going for ever
POLL_SECONDS = 2.0  # how often ``serve`` looks for confirmation work
ERROR_PAUSE_SECONDS = 60.0  # after an error (a broken template), before trying again
MAX_REPORTED = 20


@dataclass(frozen=True)
class ConfirmationEmail:
    """The confirmation email rendered once: subject, both bodies, personal fields as tokens."""

    subject: str
    html: str
    text: str
    tokens: TokenSet


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as exc:  # a user's template can fail in any way; one line says where
        raise TemplateError(f"{name}: {collapse(f'{type(exc).__name__}: {exc}')}") from exc


def render_confirmation(ctx: Context) -> ConfirmationEmail:
    """Render the ``confirm_email.*`` templates (CSS inlined once) with tokens for the
    personal fields: ``subscriber.name``, ``subscriber.email`` and ``confirm_url``."""
    settings = ctx.settings
    tokens = TokenSet()
    env = make_template_environment(settings.digest.templates_dir)
    context: dict[str, Any] = {
        "newsletter": settings.newsletter,
        "subscriber": tokens.placeholder(),
        CONFIRM_URL_FIELD: tokens.token(CONFIRM_URL_FIELD),
        "expires_days": CONFIRM_MAX_AGE.days,
        "date": ctx.clock(),
        "web_base_url": settings.web.base_url,
    }
    return ConfirmationEmail(
        subject=collapse(_render(env, CONFIRM_SUBJECT, context)),
        html=inline_css(_render(env, CONFIRM_HTML, context)),
        text=_render(env, CONFIRM_TEXT, context),
        tokens=tokens,
    )


def throttle_reason(conn: Connection, subscriber_id: int, *, now: datetime) -> str | None:
    """Why no confirmation email may go to this subscriber now, or None."""
    recent = mailings.recent_mail(
        conn, [subscriber_id], kind=CONFIRMATION, since=now - timedelta(days=1)
    )
    if subscriber_id not in recent:
        return None
    count, latest = recent[subscriber_id]
    if count >= MAX_PER_DAY:
        return f"{count} confirmation emails went to this address in the last day"
    if count >= MAX_PER_HOUR and latest > now - timedelta(hours=1):
        return "a confirmation email went to this address less than an hour ago"
    return None


def queue_confirmations(
    conn: Connection,
    email: ConfirmationEmail,
    subscribers: Sequence[Subscriber],
    *,
    now: datetime,
) -> int | None:
    """Queue one confirmation email to each pending subscriber of ``subscribers``, in the
    caller's transaction; the mailing's id, or None when nobody is pending."""
    pending = [s.id for s in subscribers if s.state is SubscriberState.PENDING]
    if not pending:
        return None
    return mailings.create_mailing(
        conn,
        kind=CONFIRMATION,
        subject=email.subject,
        html=email.html,
        text=email.text,
        token_nonce=email.tokens.nonce,
        subscriber_ids=pending,
        now=now,
    )


def _take_requests(ctx: Context, email: ConfirmationEmail) -> tuple[int, int]:
    """Turn the oldest queued sign-up requests into pending subscribers with one mailing, in
    one transaction; how many requests were taken, and how many emails queued."""
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        batch = request_rows.oldest(conn, limit=REQUEST_BATCH)
        to_mail: list[Subscriber] = []
        seen: set[str] = set()
        for request in batch:
            if request.email in seen:  # the same address twice in a batch: one email
                continue
            seen.add(request.email)
            known = subscriber_rows.get_by_email(conn, request.email)
            if known is not None and throttle_reason(conn, known.id, now=now):
                log.info("sign-up for subscriber %s not mailed: throttled", known.id)
                continue  # answered like any other request; nothing changes
            subscriber = lifecycle.request(conn, request.email, request.name, now=now)
            if subscriber is not None:
                to_mail.append(subscriber)
        queue_confirmations(conn, email, to_mail, now=now)
        request_rows.delete_ids(conn, [r.id for r in batch])
    return len(batch), len(to_mail)


@dataclass
class ConfirmationRun:
    """What one :func:`deliver_confirmations` did."""

    requests: int = 0  # sign-up requests taken from the queue
    queued: int = 0  # confirmation emails queued for them
    reports: list[SendReport] = field(default_factory=list)  # one per mailing delivered

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.reports)


def deliver_confirmations(
    ctx: Context,
    *,
    stop: threading.Event | None = None,
    presence: SenderPresence | None = None,
) -> ConfirmationRun | None:
    """Queue the sign-up requests, then deliver every unfinished confirmation mailing.

    Deliveries that fail for now are retried by a later call (nothing waits for them here).
    None when another process is delivering confirmations (it sends these too). Before any
    email goes out, forgeable links or an unreachable server stop it with one line
    (``ConfigError``, ``DeliveryError``); the requests are queued as mailings by then.
    """
    try:
        with send_lock(ctx, name=CONFIRMATION_LOCK) as lock:
            run = ConfirmationRun()
            email: ConfirmationEmail | None = None
            for _ in range(MAX_BATCHES):
                with ctx.store.atomic() as conn:
                    if not request_rows.count(conn) or (stop is not None and stop.is_set()):
                        break
                email = email or render_confirmation(ctx)
                try:
                    taken, queued = _take_requests(ctx, email)
                except IntegrityError:  # another process added one of the addresses meanwhile:
                    taken, queued = _take_requests(ctx, email)  # it is there now

                run.requests += taken
                run.queued += queued
            with ctx.store.atomic() as conn:
                unfinished = digest_rows.unfinished_digest_ids(conn, kind=CONFIRMATION)
            if unfinished and not (stop is not None and stop.is_set()):
                run.reports = _deliver(ctx, unfinished, lock=lock, stop=stop, presence=presence)
    except SendInProgress:
        return None
    if run.requests or run.reports:
        log.info(
            "confirmation emails: %d sign-up requests, %d emails queued, %d sent",
            run.requests,
            run.queued,
            run.sent,
        )
    return run


def _deliver(
    ctx: Context,
    mailing_ids: Sequence[int],
    *,
    lock: SendLock,
    stop: threading.Event | None,
    presence: SenderPresence | None = None,  # a worker's sender row (app.senders)
) -> list[SendReport]:
    """Deliver the mailings in turn, without waiting for retries; stop at a pause."""
    connector = checked_connector(ctx)  # unreachable: one line, no change
    reports = []
    try:
        for mailing_id in mailing_ids:
            if stop is not None and stop.is_set():
                break
            report = deliver_digest(
                ctx,
                mailing_id,
                lock=lock,
                stop=stop,
                connector=connector,
                presence=presence,
                wait_for_retries=False,
            )
            reports.append(report)
            if report.paused_reason:
                break  # the server refuses everything for now; the next call resumes
    finally:
        connector.close()
    return reports


def resume_confirmations(ctx: Context, *, stop: threading.Event | None = None) -> None:
    """Before a digest: deliver whatever the confirmation queue holds. A problem there is
    logged in one line, never raised: the digest goes out regardless."""
    try:
        if work_due(ctx):
            deliver_confirmations(ctx, stop=stop)
    except NewsletterError as exc:
        log.warning("confirmation emails not sent now: %s", exc)


def work_due(ctx: Context) -> bool:
    """Whether :func:`deliver_confirmations` has something to do now: queued requests, or a
    confirmation mailing with a delivery due (or left in flight by a stopped process)."""
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        if request_rows.count(conn):
            return True
        for mailing_id in digest_rows.unfinished_digest_ids(conn, kind=CONFIRMATION):
            next_at = outbox.next_retry_at(conn, mailing_id)
            if next_at is None or next_at <= now:
                return True
    return False


@dataclass(frozen=True)
class ConfirmationReport:
    """Where the confirmation emails of some mailings stand."""

    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reason), the first
    failed_count: int = 0
    waiting: int = 0  # queued, not sent yet: retried later, or another process is at it


def confirmation_report(ctx: Context, mailing_ids: Sequence[int]) -> ConfirmationReport:
    """The confirmation emails of these mailings: sent, failed (with reasons), waiting."""
    with ctx.store.atomic() as conn:
        counts = mailings.delivery_states(conn, mailing_ids)
        failed = mailings.failed_addresses(conn, mailing_ids, limit=MAX_REPORTED)
    return ConfirmationReport(
        sent=counts.get("sent", 0),
        failed=failed,
        failed_count=counts.get("failed", 0),
        waiting=counts.get("pending", 0) + counts.get("sending", 0),
    )


class ConfirmationQueue:
    """Delivers confirmation emails in a background thread until stopped (``serve``).

    Every ``interval`` seconds it looks for work (:func:`work_due`) and does it; an error is
    logged in one line and the queue tries again after ``ERROR_PAUSE_SECONDS``.
    ``stop`` lets the messages in flight finish.
    """

    def __init__(self, ctx: Context, *, interval: float = POLL_SECONDS) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confirmations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the messages in flight; wait at most ``timeout`` seconds."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            pause = self.interval
            try:
                if work_due(self.ctx):
                    deliver_confirmations(self.ctx, stop=self._stop)
            except NewsletterError as exc:
                log.warning("confirmation emails: %s", exc)
                pause = ERROR_PAUSE_SECONDS
            except Exception:  # a bug must not end the queue silently: say it, go on
                log.exception("confirmation emails: unexpected error")
                pause = ERROR_PAUSE_SECONDS
            self._stop.wait(pause)
