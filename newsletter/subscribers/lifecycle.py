"""Subscriber states and every transition between them: the one place a state changes.

::

    new address ──add────────────────────────────────────────────▶ active
    new address ──sign-up, add/import --double-opt-in──▶ pending ──confirm──▶ active
    active, pending, bounced ──unsubscribe (link, remove)──▶ unsubscribed
    active, pending, bounced ──complaint (spam report)──▶ unsubscribed, reason "complaint"
    active, pending ──hard bounce──▶ bounced, reason: the server's reply
    unsubscribed, bounced ──sign-up, add --double-opt-in──▶ pending ──confirm──▶ active

Only ``active`` subscribers get digests; confirmation emails go to ``pending`` ones. The
operator's ``add`` and ``import`` vouch for consent: they make a new address active (or
pending with double opt-in), never an unsubscribed, bounced or suppressed one. Bounces and
complaints put the address on the suppression list (:mod:`.suppression`), which add and
import respect; only the person's own confirmation lifts it. A public sign-up never changes
an existing person's name and does nothing for an active address. Erasure is
:mod:`.personal_data`.

Functions take a ``Connection`` so the caller decides the transaction: a state change and the
mail it queues are committed together.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from newsletter.errors import SubscriberError
from newsletter.models import HARD_BOUNCE_CODES, Subscriber, SubscriberState
from newsletter.store import subscribers as rows
from newsletter.subscribers.suppression import Reason, Suppressed, SuppressionList

ACTIVE, PENDING = SubscriberState.ACTIVE, SubscriberState.PENDING
UNSUBSCRIBED, BOUNCED = SubscriberState.UNSUBSCRIBED, SubscriberState.BOUNCED

COMPLAINT = "complaint"  # the state reason of an unsubscribe by spam report
_MAX_REASON_CHARS = 300


def why_not_added(address: str, state: SubscriberState) -> str:
    """Why an address already on the list is not added (again) by ``add`` or an import."""
    if state is UNSUBSCRIBED:
        return (
            f"{address} unsubscribed earlier and is never re-added silently; "
            "use --double-opt-in so they confirm themselves"
        )
    if state is BOUNCED:
        return (
            f"{address} bounced earlier; use --double-opt-in to check the address with a "
            "confirmation email"
        )
    return f"{address} is already on the list ({state.value})"


def why_suppressed(address: str, entry: Suppressed) -> str:
    """Why ``add`` or an import refuses a suppressed address."""
    return f"{address} is {entry.describe()}"


def operator_may_mail(entry: Suppressed | None, *, double_opt_in: bool) -> bool:
    """Whether the operator's add/import may take a suppressed address: a bounced one only
    with double opt-in (the confirmation email checks the address); one that complained or
    asked to be forgotten never (only the person's own sign-up brings it back)."""
    return entry is None or (double_opt_in and entry.reason is Reason.BOUNCED)


def import_refusal(
    address: str,
    *,
    state: SubscriberState | None,
    suppressed: Suppressed | None,
    double_opt_in: bool,
) -> str | None:
    """Why an import row is refused (suppressed, or already on the list), or None."""
    if not operator_may_mail(suppressed, double_opt_in=double_opt_in):
        assert suppressed is not None
        return why_suppressed(address, suppressed)
    if state is not None:
        return why_not_added(address, state)
    return None


def add(
    conn: Connection,
    address: str,
    name: str,
    *,
    now: datetime,
    double_opt_in: bool,
    suppressions: SuppressionList | None,
) -> Subscriber:
    """The operator's ``add``: active (they vouch for consent) or, with ``double_opt_in``,
    pending until the emailed link is clicked.

    With ``double_opt_in``, a pending, unsubscribed or bounced address becomes pending again
    (a new confirmation email goes out). Without it, a pending address becomes active; an
    unsubscribed, bounced or suppressed one is refused (``SubscriberError``). ``address`` and
    ``name`` are normalized and cleaned already.
    """
    existing = rows.get_by_email(conn, address)
    if existing is not None and existing.state is ACTIVE:
        raise SubscriberError(why_not_added(address, existing.state))
    suppressed = suppressions.find(conn, address) if suppressions is not None else None
    if not operator_may_mail(suppressed, double_opt_in=double_opt_in):
        assert suppressed is not None
        hint = (
            "use --double-opt-in to check the address with a confirmation email"
            if suppressed.reason is Reason.BOUNCED
            else "only the person can come back, by signing up and confirming"
        )
        raise SubscriberError(f"{why_suppressed(address, suppressed)}; {hint}")
    state = PENDING if double_opt_in else ACTIVE
    if existing is None:
        rows.insert_many(conn, [(address, name, {})], state=state, now=now)
    elif double_opt_in:
        rows.update_pending(
            conn, existing.id, name=name or existing.name, attrs=existing.attrs, now=now
        )
    elif existing.state is PENDING:
        rows.set_state(conn, existing.id, ACTIVE, now=now)
    else:
        raise SubscriberError(why_not_added(address, existing.state))
    added = rows.get_by_email(conn, address)
    assert added is not None
    return added


def request(conn: Connection, address: str, name: str, *, now: datetime) -> Subscriber | None:
    """A sign-up by the public: the subscriber to send a confirmation email, now pending, or
    None when the address is active already (nothing to do).

    A new address is added with ``name``; an existing person keeps the name they have (a
    sign-up is anyone's, so it never renames someone).
    """
    existing = rows.get_by_email(conn, address)
    if existing is None:
        rows.insert_many(conn, [(address, name, {})], state=PENDING, now=now)
    elif existing.state is ACTIVE:
        return None
    else:
        rows.update_pending(conn, existing.id, name=existing.name, attrs=existing.attrs, now=now)
    pending = rows.get_by_email(conn, address)
    assert pending is not None
    return pending


def confirm(
    conn: Connection, subscriber_id: int, *, now: datetime, suppressions: SuppressionList
) -> bool:
    """Pending -> active by the person's own confirmation, which also lifts a suppression.
    False when the subscriber was not pending."""
    if not rows.set_state(conn, subscriber_id, ACTIVE, now=now, only_from=[PENDING]):
        return False
    confirmed = rows.get_by_id(conn, subscriber_id)
    assert confirmed is not None
    suppressions.lift(conn, confirmed.email)
    return True


def unsubscribe(conn: Connection, subscriber_id: int, *, now: datetime) -> bool:
    """Unsubscribe (a link, or the operator's ``remove``); False if already unsubscribed.

    The row is kept as unsubscribed, so no import adds the address back silently.
    """
    return rows.set_state(
        conn, subscriber_id, UNSUBSCRIBED, now=now, only_from=[ACTIVE, PENDING, BOUNCED]
    )


def mark_bounced(
    conn: Connection,
    subscriber_id: int,
    reason: str,
    *,
    now: datetime,
    suppressions: SuppressionList,
) -> bool:
    """A hard bounce: an active or pending subscriber becomes bounced with the server's
    ``reason``, and the address is suppressed. True if the state changed."""
    return _suppress_and_move(
        conn,
        subscriber_id,
        Reason.BOUNCED,
        BOUNCED,
        only_from=[ACTIVE, PENDING],
        reason=" ".join(reason.split())[:_MAX_REASON_CHARS],
        now=now,
        suppressions=suppressions,
    )


def mark_complained(
    conn: Connection, subscriber_id: int, *, now: datetime, suppressions: SuppressionList
) -> bool:
    """A spam report: the subscriber is unsubscribed with reason ``complaint`` and the address
    suppressed. True if the state changed."""
    return _suppress_and_move(
        conn,
        subscriber_id,
        Reason.COMPLAINED,
        UNSUBSCRIBED,
        only_from=[ACTIVE, PENDING, BOUNCED],
        reason=COMPLAINT,
        now=now,
        suppressions=suppressions,
    )


def _suppress_and_move(
    conn: Connection,
    subscriber_id: int,
    suppressed_as: Reason,
    state: SubscriberState,
    *,
    only_from: list[SubscriberState],
    reason: str,
    now: datetime,
    suppressions: SuppressionList,
) -> bool:
    """Suppress the subscriber's address (whatever their state), then move them to ``state``
    from one of ``only_from``; True if they moved."""
    subscriber = rows.get_by_id(conn, subscriber_id)
    if subscriber is None:
        return False
    suppressions.add(conn, subscriber.email, suppressed_as, now=now)
    return rows.set_state(conn, subscriber_id, state, now=now, only_from=only_from, reason=reason)


def mark_hard_bounces(
    conn: Connection, digest_id: int, *, now: datetime, suppressions: SuppressionList
) -> int:
    """Active subscribers whose delivery of this digest got a hard bounce (see
    ``HARD_BOUNCE_CODES``) become bounced; how many."""
    bounced = rows.failed_with_codes(conn, digest_id, HARD_BOUNCE_CODES, state=ACTIVE)
    return sum(
        mark_bounced(conn, subscriber_id, reply, now=now, suppressions=suppressions)
        for subscriber_id, reply in bounced
    )
