"""Subscribing: sign-up requests from the public, and the operator's ``add`` and ``import``.

Every way to a pending subscriber queues its confirmation email in the same transaction
(:mod:`newsletter.app.confirmations`), so an interrupted command loses none and a re-run or
the next send delivers the rest, each once. The links in those emails are
:mod:`newsletter.app.links`; the state rules :mod:`newsletter.subscribers.lifecycle`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from newsletter.app.confirmations import (
    ConfirmationEmail,
    ConfirmationReport,
    confirmation_report,
    deliver_confirmations,
    queue_confirmations,
    render_confirmation,
    throttle_reason,
)
from newsletter.app.context import Context
from newsletter.app.send import checked_connector
from newsletter.errors import DeliveryError, SubscriberError
from newsletter.models import Subscriber
from newsletter.store import signup_requests as request_rows
from newsletter.subscribers import lifecycle
from newsletter.subscribers.addresses import clean_name, normalize_address, signup_name
from newsletter.subscribers.importing import ImportReport, OnReject, import_csv

log = logging.getLogger(__name__)

# Sign-up requests waiting for the confirmation queue; past this, new ones are dropped (and
# answered like any other): a flood cannot fill the disk while ``serve`` is not delivering.
MAX_QUEUED_REQUESTS = 10_000


def record_signup(ctx: Context, email: str, name: str = "") -> str:
    """A sign-up from the public form or API: checked and queued, nothing more.

    The same work for every address, on the list or not, and whether the mail server is up
    or not: the answer reveals nothing. The confirmation queue decides what happens (see
    :mod:`newsletter.app.confirmations`). ``SubscriberError`` for an invalid address or
    name; returns the normalized address.
    """
    address = normalize_address(email)
    cleaned = signup_name(name)
    with ctx.store.atomic() as conn:
        if request_rows.count(conn) >= MAX_QUEUED_REQUESTS:
            log.warning("sign-up queue full (%d requests): request dropped", MAX_QUEUED_REQUESTS)
        else:
            request_rows.add(conn, address, cleaned, now=ctx.clock())
    return address


def _check_can_send(ctx: Context) -> ConfirmationEmail:
    """Fail before anything changes when no email could go out: forgeable links, a bad DKIM
    key, a broken template, an unreachable SMTP server. The email, rendered once."""
    checked_connector(ctx).close()
    return render_confirmation(ctx)


@dataclass(frozen=True)
class Added:
    """What ``add`` did: the subscriber, and their confirmation email (double opt-in)."""

    subscriber: Subscriber
    confirmation: ConfirmationReport | None = None


def add(ctx: Context, email: str, name: str = "", *, double_opt_in: bool = False) -> Added:
    """``subscribers add``: active at once, or pending with a confirmation email.

    With ``double_opt_in`` the email is queued with the change and delivered at once
    (``DeliveryError`` if the server refuses it; a temporary failure is retried later by
    ``serve`` or the next send). ``SubscriberError`` when the address may not be added, or
    got a confirmation email too recently (see ``confirmations.MAX_PER_HOUR``).
    """
    address = normalize_address(email)
    mail = _check_can_send(ctx) if double_opt_in else None
    mailing_id = None
    with ctx.store.atomic() as conn:
        now = ctx.clock()
        added = lifecycle.add(
            conn,
            address,
            clean_name(name),
            now=now,
            double_opt_in=double_opt_in,
            suppressions=ctx.suppressions,
        )
        if mail is not None:
            throttled = throttle_reason(conn, added.id, now=now)
            if throttled:
                raise SubscriberError(f"{address}: {throttled}; try again later")
            mailing_id = queue_confirmations(conn, mail, [added], now=now)
    if mailing_id is None:
        return Added(added)
    deliver_confirmations(ctx)
    report = confirmation_report(ctx, [mailing_id])
    if report.failed:
        raise DeliveryError(
            f"{address} is pending, but the confirmation email was refused: {report.failed[0][1]}"
        )
    return Added(added, report)


def import_subscribers(
    ctx: Context,
    path: Path,
    *,
    double_opt_in: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_reject: OnReject | None = None,
    stop: threading.Event | None = None,
) -> tuple[ImportReport, ConfirmationReport | None]:
    """``subscribers import``; with double opt-in, each new address gets a confirmation email.

    Each batch's confirmation emails are queued in the batch's transaction and delivered once
    the file is read. ``stop`` (Ctrl-C) ends the import after the current batch
    (``report.stopped``) and sends nothing more: the next send or a re-run delivers what was
    queued. ``on_reject`` gets every rejected row (the report keeps only the first few).
    """
    mail = _check_can_send(ctx) if double_opt_in else None  # fail fast: nothing imported yet
    mailing_ids: list[int] = []

    def queue(conn: Connection, added: list[Subscriber]) -> None:
        assert mail is not None
        mailing_id = queue_confirmations(conn, mail, added, now=ctx.clock())
        if mailing_id is not None:
            mailing_ids.append(mailing_id)

    report = import_csv(
        ctx.store,
        path,
        now=ctx.clock(),
        double_opt_in=double_opt_in,
        suppressions=ctx.suppressions,
        on_progress=on_progress,
        on_added=queue if mail is not None else None,
        on_reject=on_reject,
        stop=stop,
    )
    if mail is None:
        return report, None
    if not report.stopped:
        deliver_confirmations(ctx, stop=stop)
    return report, confirmation_report(ctx, mailing_ids)
