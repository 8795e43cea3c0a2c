"""Sending: resume unfinished digests, then build and send the next one, under a DB lock."""

from __future__ import annotations

import logging
import secrets
import smtplib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from newsletter.app.context import Context
from newsletter.app.digest import NextDigest, next_digest
from newsletter.delivery.dkim import make_signer
from newsletter.delivery.engine import DeliveryEngine, Progress, SendReport
from newsletter.delivery.smtp import SmtpConnector, classify, close_quietly, connect, send_message
from newsletter.errors import DeliveryError, DeliveryPaused, SendInProgress, SubscriberError
from newsletter.headers import UnsendableAddress, wire_address
from newsletter.message import Envelope, PreparedMessage
from newsletter.models import DigestState, Recipient, SubscriberState
from newsletter.personalization import TokenSet
from newsletter.store import digests as digest_rows
from newsletter.store import locks, outbox
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers import normalize_address

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(minutes=5)
LOCK_REFRESH = timedelta(seconds=30)


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

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.all_reports())

    @property
    def failed(self) -> list[SendReport]:
        """The digests of this run that finished without reaching anybody."""
        return [r for r in self.all_reports() if r.digest_failed]

    def all_reports(self) -> list[SendReport]:
        return self.resumed + ([self.report] if self.report else [])


class _SendLock:
    """The database lock row held for a whole send, refreshed while it runs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Unique per send, so that a second send in the same process (the scheduler and the
        # web app, two threads) is refused like one from another process.
        self.owner = f"{locks.process_owner()}:{secrets.token_hex(4)}"
        self.refreshed_at = ctx.clock()

    def refresh(self) -> None:
        """Extend the lease now and then; ``SendInProgress`` if another process took it."""
        now = self.ctx.clock()
        if now - self.refreshed_at < LOCK_REFRESH:
            return
        with self.ctx.store.atomic() as conn:
            held = locks.refresh(conn, locks.SEND_LOCK, self.owner, now=now, ttl=LOCK_TTL)
        if not held:
            raise SendInProgress(
                "another process took over the send lock (this one stalled for longer than "
                f"{LOCK_TTL.total_seconds():.0f} s); stopped so that nobody gets the digest twice"
            )
        self.refreshed_at = now


@contextmanager
def send_lock(ctx: Context) -> Iterator[_SendLock]:
    """Hold the send lock, or raise ``SendInProgress`` naming who holds it."""
    lock = _SendLock(ctx)
    with ctx.store.atomic() as conn:
        holder = locks.try_acquire(conn, locks.SEND_LOCK, lock.owner, now=ctx.clock(), ttl=LOCK_TTL)
    if holder is not None:
        raise SendInProgress(
            f"another send is running on this database ({holder}); try again when it ends"
        )
    try:
        yield lock
    finally:
        with ctx.store.atomic() as conn:
            locks.release(conn, locks.SEND_LOCK, lock.owner)


def dkim_signer(ctx: Context) -> Callable[[bytes], bytes] | None:
    """The configured DKIM signer, or None; ``ConfigError`` if the key is unusable."""
    sender, _ = wire_address(str(ctx.settings.newsletter.from_address))
    return make_signer(ctx.settings.dkim, default_domain=sender.rpartition("@")[2])


def prepare_message(ctx: Context, digest: digest_rows.StoredDigest) -> PreparedMessage:
    """The digest's MIME message with holes for the personal fields (built once per send)."""
    return PreparedMessage(
        digest_id=digest.id,
        subject=digest.subject,
        html_body=digest.html,
        text_body=digest.text,
        tokens=TokenSet(nonce=digest.token_nonce),
        settings=ctx.settings,
        unsubscribe_url=lambda r: ctx.unsubscribe_url(r.public_id),
        dkim_sign=dkim_signer(ctx),
    )


def deliver_digest(
    ctx: Context,
    digest_id: int,
    *,
    lock: _SendLock,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    connector: SmtpConnector | None = None,
) -> SendReport:
    """Run the outbox of one digest to the end (or to a stop or pause) and record its state."""
    with ctx.store.atomic() as conn:
        digest = digest_rows.get_digest(conn, digest_id)
        assert digest is not None, f"digest {digest_id} vanished"
        if digest.state is DigestState.PAUSED:
            digest_rows.set_digest_state(conn, digest_id, DigestState.SENDING, now=ctx.clock())
    engine = DeliveryEngine(
        ctx.store,
        ctx.settings.smtp,
        prepare_message(ctx, digest),
        clock=ctx.clock,
        stop=stop,
        progress=progress,
        on_batch=lock.refresh,
        connector=connector,
    )
    report = engine.run(digest_id)
    with ctx.store.atomic() as conn:
        bounced = subscriber_rows.mark_hard_bounces(conn, digest_id, now=ctx.clock())
        if report.paused_reason:
            digest_rows.set_digest_state(conn, digest_id, DigestState.PAUSED, now=ctx.clock())
        elif report.finished:
            # Nobody received it: failed, and its articles are free for the next digest.
            report.digest_failed = not report.counts.get("sent")
            state = DigestState.FAILED if report.digest_failed else DigestState.SENT
            digest_rows.set_digest_state(conn, digest_id, state, now=ctx.clock())
    log.info(
        "digest %s: %d sent, %d failed, %d to retry%s",
        digest_id,
        report.sent,
        report.failed,
        report.retried,
        " (interrupted; resumable)" if report.interrupted else "",
    )
    if report.digest_failed:  # the callers say so too: send-now exits 3 with one line
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


def send_now(
    ctx: Context,
    *,
    slot: str | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> SendSummary:
    """Finish unfinished digests, then send a digest of the new articles (if any)."""
    summary = SendSummary()
    with send_lock(ctx) as lock:
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
        if not unfinished and upcoming is None:
            return summary
        connector = checked_connector(ctx)
        try:
            for digest_id in unfinished:
                log.info("resuming unfinished digest %s", digest_id)
                report = deliver_digest(
                    ctx, digest_id, lock=lock, stop=stop, progress=progress, connector=connector
                )
                summary.resumed.append(report)
                _raise_if_paused(report)
                if report.interrupted:
                    return summary
            if upcoming is not None:
                digest_id = _create_digest(ctx, upcoming, slot)
                summary.digest_id, summary.subject = digest_id, upcoming.rendered.subject
                summary.articles = len(upcoming.articles)
                summary.report = deliver_digest(
                    ctx, digest_id, lock=lock, stop=stop, progress=progress, connector=connector
                )
                _raise_if_paused(summary.report)
        finally:
            connector.close()
    return summary


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


def _create_digest(ctx: Context, upcoming: NextDigest, slot: str | None) -> int:
    now = ctx.clock()
    with ctx.store.atomic() as conn:
        digest_id = digest_rows.create_digest(
            conn, upcoming.rendered, token_nonce=upcoming.tokens.nonce, slot=slot, now=now
        )
        recipients = outbox.create_outbox(conn, digest_id, now=now)
    log.info(
        "digest %s: %d articles for %d subscribers", digest_id, len(upcoming.articles), recipients
    )
    return digest_id


def _raise_if_paused(report: SendReport) -> None:
    if report.paused_reason:
        raise DeliveryPaused(f"digest {report.digest_id}: {report.paused_reason}")


def _has_active_subscribers(ctx: Context) -> bool:
    with ctx.store.atomic() as conn:
        return bool(subscriber_rows.count_by_state(conn).get(SubscriberState.ACTIVE.value))


def send_test_copy(ctx: Context, address: str) -> tuple[Envelope, NextDigest]:
    """Send the next digest to one address as a test; nothing is marked as sent.

    Signed like the real thing. An address that is not on the list gets no unsubscribe link
    (there is nobody to unsubscribe): no List-Unsubscribe fields, a note in the bodies.
    """
    to = normalize_address(address)
    upcoming, _ = next_digest(ctx, remember=False)
    if upcoming is None:
        raise SubscriberError("no new articles: there is no next digest to send a test copy of")
    with ctx.store.atomic() as conn:
        known = subscriber_rows.get_by_email(conn, to)
    recipient = Recipient(
        delivery_id=0,
        subscriber_id=known.id if known else 0,
        email=to,
        name=known.name if known else "",
        attrs=known.attrs if known else {},
        public_id=known.public_id if known else "",
    )
    message = PreparedMessage(
        digest_id=0,
        subject="[TEST] " + upcoming.rendered.subject,
        html_body=upcoming.rendered.html,
        text_body=upcoming.rendered.text,
        tokens=upcoming.tokens,
        settings=ctx.settings,
        unsubscribe_url=(lambda r: ctx.unsubscribe_url(r.public_id)) if known else None,
        dkim_sign=dkim_signer(ctx),
    )
    try:
        envelope = message.personalize(recipient, now=ctx.clock())
    except UnsendableAddress as exc:
        raise SubscriberError(f"cannot send a test copy to {to}: {exc}") from None
    client = connect(ctx.settings.smtp)
    try:
        send_message(
            client, envelope.sender, envelope.recipient, envelope.data, smtputf8=envelope.smtputf8
        )
    except (OSError, smtplib.SMTPException) as exc:
        reason = classify(exc, envelope.recipient).reason
        raise DeliveryError(
            f"the SMTP server did not accept the test copy for {to}: {reason}"
        ) from None
    finally:
        close_quietly(client)
    return envelope, upcoming


@dataclass(frozen=True)
class DigestStatus:
    id: int
    subject: str
    state: str
    slot: str | None
    created_at: datetime
    counts: dict[str, int]
    failures: list[tuple[str, int]]


def digest_status(ctx: Context, *, limit: int = 10) -> list[DigestStatus]:
    """Recent digests with their delivery counts per state and the reasons of failures."""
    with ctx.store.atomic() as conn:
        recent = digest_rows.recent_digests(conn, limit=limit)
        counts = digest_rows.delivery_counts(conn, [d.id for d in recent])
        return [
            DigestStatus(
                d.id,
                d.subject,
                d.state.value,
                d.slot,
                d.created_at,
                counts[d.id],
                digest_rows.failure_reasons(conn, d.id) if counts[d.id].get("failed") else [],
            )
            for d in recent
        ]


def digest_failure_reasons(ctx: Context, digest_id: int) -> list[tuple[str, int]]:
    """The most common reasons the deliveries of a digest failed, with their counts."""
    with ctx.store.atomic() as conn:
        return digest_rows.failure_reasons(conn, digest_id)
