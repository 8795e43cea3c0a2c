"""Bounces and complaints after delivery: the VERP envelope sender, and reading the mailbox.

``check_bounces`` reads the new messages of ``[bounces] mailbox``. For each one it classifies
the message (:mod:`newsletter.bounces.classify`), finds the delivery it names
(:mod:`newsletter.bounces.matching`) and, in one transaction, records it under its mailbox
key and applies it through the subscriber lifecycle: hard → bounced; soft → counted, and
bounced after ``soft_limit`` mailings soft-bounced within ``soft_days``; complaint →
unsubscribed with reason ``complaint``; both suppress the address. Only after that commit is
the message marked done in the mailbox, so a crash in between offers it again, and its
recorded key makes the second time change nothing. One check runs at a time per database.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from newsletter.app.context import Context
from newsletter.bounces.classify import BounceKind, Classification, classify
from newsletter.bounces.mailboxes import (
    ImapLocation,
    MailboxMessage,
    MailboxReader,
    MaildirLocation,
    open_mailbox,
    parse_mailbox_url,
)
from newsletter.bounces.matching import Match, VerpKeys, find_delivery
from newsletter.bounces.verp import VerpSigner, verp_key
from newsletter.errors import BounceCheckInProgress, ConfigError, StoreError, SubscriberError
from newsletter.models import Recipient
from newsletter.store import bounce_reports as report_rows
from newsletter.store import locks
from newsletter.subscribers import lifecycle
from newsletter.subscribers.addresses import normalize_address

log = logging.getLogger(__name__)

BOUNCE_LOCK = "bounces"
LOCK_TTL = timedelta(minutes=5)
LOCK_REFRESH = timedelta(seconds=30)
# What ``bounces check`` counts, in the order it prints them.
OUTCOMES = ("hard", "soft", "complaint", "refused", "ignored", "unmatched")
_ACTIONABLE = (BounceKind.HARD, BounceKind.SOFT, BounceKind.REFUSED, BounceKind.COMPLAINT)

OpenReader = Callable[[], MailboxReader]


def envelope_sender(ctx: Context, mailing_id: int) -> Callable[[Recipient], str] | None:
    """Each recipient's MAIL FROM for one mailing: a VERP address naming the delivery (the
    mailing and the subscriber's public id) when ``[bounces] address`` is set, else None
    (the From address). The bounce address is split and the MAC keyed once per mailing."""
    address = ctx.settings.bounces.address
    if address is None:
        return None
    key = verp_key(ctx.settings.web.secret.get_secret_value())
    signer = VerpSigner(address, mailing_id, key=key)
    return lambda recipient: signer.sender(recipient.public_id)


def mailbox_location(ctx: Context) -> MaildirLocation | ImapLocation:
    """The configured bounce mailbox; ``ConfigError`` saying what to set when it is unusable."""
    bounces = ctx.settings.bounces
    if not bounces.mailbox:
        raise ConfigError(
            "[bounces] mailbox is not set: give the folder bounces arrive in, e.g. "
            "maildir:/var/mail/bounces or imaps://bounces@imap.example.org/INBOX"
        )
    location = parse_mailbox_url(bounces.mailbox)
    if isinstance(location, ImapLocation) and bounces.password is None:
        raise ConfigError(
            "[bounces] mailbox is an IMAP folder: set its password in NEWSLETTER_BOUNCES__PASSWORD"
        )
    return location


def open_bounce_mailbox(ctx: Context) -> MailboxReader:
    """A reader for ``[bounces] mailbox`` (``MailboxError`` if it cannot be opened)."""
    password = ctx.settings.bounces.password
    return open_mailbox(
        mailbox_location(ctx), password=password.get_secret_value() if password else None
    )


@dataclass
class BounceCheck:
    """What one ``check_bounces`` did: messages per outcome and the state changes."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    already_recorded: int = 0  # offered again after a crash: recorded before, now marked done
    bounced: int = 0  # subscribers made bounced (hard, or too many soft bounces)
    unsubscribed: int = 0  # subscribers unsubscribed by a complaint

    @property
    def messages(self) -> int:
        return sum(self.counts.values()) + self.already_recorded


def check_bounces(
    ctx: Context, *, open_reader: OpenReader | None = None, stop: threading.Event | None = None
) -> BounceCheck:
    """Read, record and apply every new message of the bounce mailbox; see the module doc.

    ``BounceCheckInProgress`` if another check runs on this database; ``MailboxError`` if
    the mailbox cannot be read (what was recorded so far stays recorded).
    """
    if open_reader is None:
        mailbox_location(ctx)  # a setting to fix: say so before anything else
    opener = open_reader or (lambda: open_bounce_mailbox(ctx))
    report = BounceCheck()
    with _bounce_lock(ctx) as refresh:
        verp = _verp_keys(ctx)
        with opener() as reader:
            for message in reader.new_messages():
                if stop is not None and stop.is_set():
                    break
                _process(ctx, message, verp, report)
                reader.done(message)  # only now: the outcome is committed
                refresh()
    log.info(
        "bounce mailbox: %d messages (%s); %d bounced, %d unsubscribed by complaint",
        report.messages,
        ", ".join(f"{n} {outcome}" for outcome, n in report.counts.items()),
        report.bounced,
        report.unsubscribed,
    )
    return report


def _process(
    ctx: Context, message: MailboxMessage, verp: VerpKeys | None, report: BounceCheck
) -> None:
    """Record and apply one message in one transaction (nothing if it was recorded before)."""
    found = _classified(message)
    now = ctx.clock()
    try:
        with ctx.store.atomic() as conn:
            outcome = _record_and_apply(ctx, conn, message.key, found, verp, report, now)
    except (StoreError, SQLAlchemyError):
        raise  # the database, not the message: stop, and offer it again next time
    except Exception as exc:  # a message that breaks the matching must not block the mailbox
        log.warning("bounce message %s could not be applied (%r); ignored", message.key, exc)
        found = Classification(BounceKind.IGNORED, "unreadable")
        with ctx.store.atomic() as conn:
            outcome = _record_and_apply(ctx, conn, message.key, found, verp, report, now)
    if outcome is None:
        report.already_recorded += 1
    else:
        report.counts[outcome] += 1


def _classified(message: MailboxMessage) -> Classification:
    try:
        return classify(message.raw)
    except Exception as exc:  # classify never raises; a poison message is still marked done
        log.warning("bounce message %s could not be read (%r); ignored", message.key, exc)
        return Classification(BounceKind.IGNORED, "unreadable")


def _record_and_apply(
    ctx: Context,
    conn: Connection,
    key: str,
    found: Classification,
    verp: VerpKeys | None,
    report: BounceCheck,
    now: datetime,
) -> str | None:
    """The message's outcome, recorded and applied; None if it was recorded before."""
    if report_rows.is_recorded(conn, key):
        return None
    match = None
    if found.kind in _ACTIONABLE:
        match = find_delivery(conn, found, verp=verp, normalize=_normalized, now=now)
    outcome = found.kind.value if match is not None or found.kind not in _ACTIONABLE else None
    row = report_rows.BounceReport(
        key,
        outcome or "unmatched",
        match.delivery if match else None,
        match.by if match else None,
        found.status,
        found.diagnostic if match else None,  # it may quote an address: kept for a match only
    )
    if not report_rows.record(conn, row, now=now):
        return None  # recorded by another process at the same moment
    if match is not None:
        _apply(ctx, conn, found, match, report, now)
    log.debug("bounce message %s: %s", key, row.outcome)
    return row.outcome


def _apply(
    ctx: Context,
    conn: Connection,
    found: Classification,
    match: Match,
    report: BounceCheck,
    now: datetime,
) -> None:
    subscriber_id = match.delivery.subscriber_id
    said = found.diagnostic or (f"status {found.status}" if found.status else "no reason given")
    if found.kind is BounceKind.HARD:
        report.bounced += lifecycle.mark_bounced(
            conn, subscriber_id, said, now=now, suppressions=ctx.suppressions
        )
    elif found.kind is BounceKind.SOFT:
        settings = ctx.settings.bounces
        since = now - timedelta(days=settings.soft_days)
        soft = report_rows.soft_mailings_since(conn, subscriber_id, since=since)
        if soft >= settings.soft_limit:
            reason = f"{soft} soft bounces within {settings.soft_days} days; the last: {said}"
            report.bounced += lifecycle.mark_bounced(
                conn, subscriber_id, reason, now=now, suppressions=ctx.suppressions
            )
    elif found.kind is BounceKind.COMPLAINT:
        report.unsubscribed += lifecycle.mark_complained(
            conn, subscriber_id, now=now, suppressions=ctx.suppressions
        )
    # refused (a policy or spam filter): recorded for the rates, the subscriber stays


def _normalized(address: str) -> str | None:
    try:
        return normalize_address(address)
    except (SubscriberError, ValueError):
        return None


def _verp_keys(ctx: Context) -> VerpKeys | None:
    """What reads our VERP tokens: the current web secret's key and the previous ones'."""
    address = ctx.settings.bounces.address
    if address is None:
        return None
    web = ctx.settings.web
    previous = [s.get_secret_value() for s in web.previous_secrets]
    return VerpKeys.for_secrets(address, web.secret.get_secret_value(), previous)


@contextmanager
def _bounce_lock(ctx: Context) -> Iterator[Callable[[], None]]:
    """Hold the ``bounces`` lock row for one check; yields a function that extends it."""
    owner = f"{locks.process_owner()}:{secrets.token_hex(4)}"
    with ctx.store.atomic() as conn:
        holder = locks.try_acquire(conn, BOUNCE_LOCK, owner, now=ctx.clock(), ttl=LOCK_TTL)
    if holder is not None:
        raise BounceCheckInProgress(
            f"another bounce check is running on this database ({holder}); try again when it ends"
        )
    refreshed_at = ctx.clock()

    def refresh() -> None:
        nonlocal refreshed_at
        now = ctx.clock()
        if now - refreshed_at >= LOCK_REFRESH:
            with ctx.store.atomic() as conn:
                locks.refresh(conn, BOUNCE_LOCK, owner, now=now, ttl=LOCK_TTL)
            refreshed_at = now

    try:
        yield refresh
    finally:
        with ctx.store.atomic() as conn:
            locks.release(conn, BOUNCE_LOCK, owner)
