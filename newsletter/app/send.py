"""Sending digests: finish unfinished ones, then build and send the next one, under the lock.

The lock is :mod:`newsletter.app.send_lock`; a single test copy is
:mod:`newsletter.app.send_copy`, what was sent :mod:`newsletter.app.status`, and sending the
failed deliveries of a digest again :mod:`newsletter.app.resend`. With ``queue``, ``send_now``
only builds the digest and its outbox and leaves delivery to ``newsletter worker``
processes (:mod:`newsletter.app.worker`), which call :func:`deliver_digest` too; the senders
of one database share the SMTP limits through :mod:`newsletter.app.senders`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from newsletter.app.bounces import envelope_sender
from newsletter.app.context import Context
from newsletter.app.digest import NextDigest, next_digest
from newsletter.app.send_lock import SendLock, send_lock
from newsletter.app.senders import SenderPresence, sender_presence
from newsletter.delivery.dkim import make_signer
from newsletter.delivery.engine import DeliveryEngine
from newsletter.delivery.report import Progress, SendReport
from newsletter.delivery.smtp import SmtpConnector
from newsletter.errors import DeliveryPaused, SendInProgress
from newsletter.headers import wire_address
from newsletter.message import PreparedMessage
from newsletter.models import DigestState, MailingKind, SubscriberState
from newsletter.personalization import TokenSet
from newsletter.store import digests as digest_rows
from newsletter.store import outbox
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers import lifecycle

log = logging.getLogger(__name__)


@dataclass
class SendSummary:
    """What one ``send_now`` did."""

    resumed: list[SendReport] = field(default_factory=list)
    report: SendReport | None = None  # the new digest's send, if there was one
    digest_id: int | None = None
    subject: str | None = None
    articles: int = 0
    problems: list[str] = field(default_factory=list)
    skipped_reason: str | None = None  # why no new digest was made
    queued: int | None = None  # with ``queue``: the new digest's deliveries, left to workers
    left_to_workers: list[int] = field(default_factory=list)  # with ``queue``: unfinished
    # digests (paused ones handed back to the workers)

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.all_reports())

    @property
    def failed(self) -> list[SendReport]:
        """The digests of this run that finished without reaching anybody."""
        return [r for r in self.all_reports() if r.digest_failed]

    def all_reports(self) -> list[SendReport]:
        return self.resumed + ([self.report] if self.report else [])


def dkim_signer(ctx: Context) -> Callable[[bytes], bytes] | None:
    """The configured DKIM signer, or None; ``ConfigError`` if the key is unusable."""
    sender, _ = wire_address(str(ctx.settings.newsletter.from_address))
    return make_signer(ctx.settings.dkim, default_domain=sender.rpartition("@")[2])


def prepare_message(ctx: Context, digest: digest_rows.StoredDigest) -> PreparedMessage:
    """The mailing's MIME message with holes for the personal fields (built once per send).

    A confirmation email is transactional: its own confirm link, no unsubscribe link. With
    ``[bounces] address`` set, each delivery's envelope sender is its VERP address.
    """
    confirmation = digest.kind is MailingKind.CONFIRMATION
    return PreparedMessage(
        digest_id=digest.id,
        subject=digest.subject,
        html_body=digest.html,
        text_body=digest.text,
        tokens=TokenSet(nonce=digest.token_nonce),
        settings=ctx.settings,
        unsubscribe_url=None if confirmation else lambda r: ctx.unsubscribe_url(r.public_id),
        confirm_url=(lambda r: ctx.confirm_url(r.public_id)) if confirmation else None,
        dkim_sign=dkim_signer(ctx),
        envelope_sender=envelope_sender(ctx, digest.id),
    )


def deliver_digest(
    ctx: Context,
    digest_id: int,
    *,
    lock: SendLock | None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    connector: SmtpConnector | None = None,
    presence: SenderPresence | None = None,
    wait_for_retries: bool = True,
) -> SendReport:
    """Run the outbox of one digest to the end (or to a stop or pause) and record its state.

    Any mailing: a confirmation mailing goes to its pending subscribers. ``lock``: the send
    lock this send holds (None for a worker where several may send); ``presence``: this
    process's sender row, for its share of the SMTP limits (without one, the send has a row of
    its own while it runs). Without ``wait_for_retries`` it returns once nothing is due,
    leaving retries (and rows other senders hold) to later calls.
    """
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
        assert digest is not None, f"digest {digest_id} vanished"
        if digest.state is DigestState.PAUSED:
            digest_rows.resume_paused(conn, digest_id, now=ctx.clock())
    with ExitStack() as own:
        if presence is None:  # a sender of its own: it shares the SMTP limits all the same
            presence = own.enter_context(sender_presence(ctx, digest.kind.value))
        engine = DeliveryEngine(
            ctx.store,
            ctx.settings.smtp,
            prepare_message(ctx, digest),
            clock=ctx.clock,
            stop=stop,
            progress=progress,
            on_batch=lock.refresh if lock is not None else None,
            connector=connector,
            audience=(
                SubscriberState.PENDING
                if digest.kind is MailingKind.CONFIRMATION
                else SubscriberState.ACTIVE
            ),
            owner=presence.owner,
            lease_seconds=ctx.settings.workers.lease_seconds,
            share=presence.beat,
            wait_for_retries=wait_for_retries,
        )
        report = engine.run(digest_id)
    decided, bounced = settle_digest(ctx, report)
    log.info(
        "%s %s: %d sent, %d failed, %d to retry%s",
        digest.kind.value,  # "digest", or "confirmation" for confirmation emails
        digest_id,
        report.sent,
        report.failed,
        report.retried,
        " (interrupted; resumable)" if report.interrupted else "",
    )
    if report.digest_failed and decided and digest.kind is MailingKind.DIGEST:
        # the callers say so too: send-now exits 3 with one line
        log.info(
            "digest %s reached nobody (%d failed); its articles go to the next digest",
            digest_id,
            report.counts.get("failed", 0),
        )
    if bounced:
        log.info(
            "digest %s: %d addresses bounced for good; they get no more digests", digest_id, bounced
        )
    return report


def settle_digest(ctx: Context, report: SendReport) -> tuple[bool, int]:
    """After a pass: mark hard bounces, and pause or finish the digest, decided once however
    many senders finish at the same time (its row is locked while one decides). Returns
    whether this call decided the end state, and how many addresses it marked bounced."""
    digest_id = report.digest_id
    now = ctx.clock()
    decided = False
    with ctx.store.atomic() as conn:
        state = digest_rows.lock_digest_state(conn, digest_id)
        bounced = lifecycle.mark_hard_bounces(
            conn, digest_id, now=now, suppressions=ctx.suppressions
        )
        report.counts = outbox.counts(conn, digest_id)
        if report.paused_reason:
            digest_rows.set_digest_state(
                conn, digest_id, DigestState.PAUSED, now=now, only_from=[DigestState.SENDING]
            )
        elif report.finished and state in (DigestState.SENDING, DigestState.PAUSED):
            # Nobody received it: failed, and its articles are free for the next digest.
            failed = not report.counts.get("sent")
            new_state = DigestState.FAILED if failed else DigestState.SENT
            decided = digest_rows.set_digest_state(
                conn, digest_id, new_state, now=now, only_from=[state]
            )
            state = new_state
    report.digest_failed = report.finished and state is DigestState.FAILED
    return decided, bounced


def send_now(
    ctx: Context,
    *,
    slot: str | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    queue: bool = False,
) -> SendSummary:
    """Finish unfinished digests, then send a digest of the new articles (if any).

    With ``queue``, build the digest and its outbox and return at once: ``newsletter worker``
    processes deliver it (and the unfinished ones), see :func:`queue_digest`.
    """
    if queue:
        return queue_digest(ctx, slot=slot)
    summary = SendSummary()
    with send_lock(ctx) as lock:
        unfinished, upcoming = _plan(ctx, slot, summary)
        if not unfinished and upcoming is None:
            return summary
        connector = checked_connector(ctx)
        try:
            with sender_presence(ctx, "send-now") as presence:

                def deliver(digest_id: int) -> SendReport:
                    report = deliver_digest(
                        ctx,
                        digest_id,
                        lock=lock,
                        stop=stop,
                        progress=progress,
                        connector=connector,
                        presence=presence,
                    )
                    _raise_if_paused(report)
                    return report

                for digest_id in unfinished:
                    log.info("resuming unfinished digest %s", digest_id)
                    summary.resumed.append(deliver(digest_id))
                    if summary.resumed[-1].interrupted:
                        return summary
                if upcoming is not None:
                    digest_id, _ = _create_digest(ctx, upcoming, slot)
                    summary.digest_id, summary.subject = digest_id, upcoming.rendered.subject
                    summary.articles = len(upcoming.articles)
                    summary.report = deliver(digest_id)
        finally:
            connector.close()
    return summary


def queue_digest(ctx: Context, *, slot: str | None = None) -> SendSummary:
    """Build the digest of the new articles and its outbox, and leave them to the workers.

    Nothing is sent and no send lock is taken (a worker may be delivering meanwhile): the
    database refuses a second digest for the same articles or slot. Paused digests are
    handed back to the workers (set sending again). What would stop a send (a bad DKIM key,
    forgeable links) stops this too, before anything is stored.
    """
    dkim_signer(ctx)
    _warn_if_links_are_forgeable(ctx)
    summary = SendSummary()
    unfinished, upcoming = _plan(ctx, slot, summary)
    with ctx.store.atomic() as conn:
        for digest_id in unfinished:
            digest_rows.resume_paused(conn, digest_id, now=ctx.clock())
    summary.left_to_workers = unfinished
    if upcoming is not None:
        digest_id, recipients = _create_digest(ctx, upcoming, slot)
        summary.digest_id, summary.subject = digest_id, upcoming.rendered.subject
        summary.articles = len(upcoming.articles)
        summary.queued = recipients
        log.info("digest %s: queued for the workers", digest_id)
    return summary


def _plan(
    ctx: Context, slot: str | None, summary: SendSummary
) -> tuple[list[int], NextDigest | None]:
    """The unfinished digests, and the next digest to make (None: none, ``summary`` says
    why)."""
    with ctx.store.atomic() as conn:
        unfinished = digest_rows.unfinished_digest_ids(conn)
        slot_done = slot is not None and digest_rows.slot_taken(conn, slot)
    upcoming = None
    if slot_done:
        summary.skipped_reason = f"the digest for slot {slot} was already made"
    else:
        upcoming, gathered = next_digest(ctx)
        summary.problems = gathered.problems
        if upcoming is None:
            summary.skipped_reason = "no new articles since the last digest"
        elif not _has_active_subscribers(ctx):
            summary.skipped_reason = (
                "no active subscribers, so no digest was made (the new articles wait)"
            )
            upcoming = None
    return unfinished, upcoming


def checked_connector(ctx: Context) -> SmtpConnector:
    """Check what can stop a send before any row is touched, connecting once to the server.

    A bad DKIM key, links that would be forgeable, an unreachable server, a refused login each
    stop the send here with one line saying what to check. The connection is not wasted: the
    connector hands it to the first worker of the send; ``close`` it when the send ends.
    """
    dkim_signer(ctx)
    _warn_if_links_are_forgeable(ctx)
    connector = SmtpConnector(ctx.settings.smtp)
    connector.check()
    return connector


def _warn_if_links_are_forgeable(ctx: Context) -> None:
    # Real links signed with the public default secret could be forged by anyone: refused
    # (ConfigError) unless [web] base_url is loopback, as in the demo and the tests.
    ctx.check_link_settings()


def _create_digest(ctx: Context, upcoming: NextDigest, slot: str | None) -> tuple[int, int]:
    """Store the digest and its outbox in one transaction; its id and how many recipients."""
    now = ctx.clock()
    try:
        with ctx.store.atomic() as conn:
            digest_id = digest_rows.create_digest(
                conn,
                upcoming.rendered,
                token_nonce=upcoming.tokens.nonce,
                slot=slot,
                now=now,
                archive_key=upcoming.archive_key,
            )
            recipients = outbox.create_outbox(conn, digest_id, now=now)
    except digest_rows.DigestConflict as exc:  # rolled back: nothing of it was stored
        raise SendInProgress(
            "another send took these articles or this slot at the same moment; "
            "nothing was sent twice"
        ) from exc
    log.info(
        "digest %s: %d articles for %d subscribers", digest_id, len(upcoming.articles), recipients
    )
    return digest_id, recipients


def _raise_if_paused(report: SendReport) -> None:
    if report.paused_reason:
        raise DeliveryPaused(f"digest {report.digest_id}: {report.paused_reason}")


def _has_active_subscribers(ctx: Context) -> bool:
    return _active_subscribers(ctx) > 0


def _active_subscribers(ctx: Context) -> int:
    with ctx.store.atomic() as conn:
        return subscriber_rows.count_by_state(conn).get(SubscriberState.ACTIVE.value, 0)


@dataclass(frozen=True)
class SendPlan:
    """What ``send_now`` would do now: the unfinished digests it would finish first, and the
    next digest (None: nothing new) for how many active subscribers."""

    unfinished: list[int]
    active_subscribers: int
    upcoming: NextDigest | None


def plan_send(ctx: Context) -> SendPlan:
    """``send-now --dry-run``: what a send would do now, storing and sending nothing."""
    with ctx.store.atomic() as conn:
        unfinished = digest_rows.unfinished_digest_ids(conn)
    upcoming, _ = next_digest(ctx, remember=False)
    return SendPlan(unfinished, _active_subscribers(ctx), upcoming)
