"""The subscriber list: add, remove and list addresses.

Validation and cleaning of what a record holds is in :mod:`newsletter.subscriber_rules`, CSV
import and export in :mod:`newsletter.subscriber_import` and :mod:`newsletter.subscriber_csv`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from newsletter.errors import SubscriberError
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.subscriber_csv import export_csv
from newsletter.subscriber_import import ImportReport, import_csv
from newsletter.subscriber_rules import clean_name, normalize_address, why_not_added


def add_subscriber(
    store: Store, email: str, name: str = "", *, now: datetime, double_opt_in: bool = False
) -> Subscriber:
    """Add one address: active (the operator vouches for consent) or pending confirmation.

    With ``double_opt_in``, an address that is pending, unsubscribed or bounced becomes
    pending again (the caller sends it a new confirmation email). Without it, a pending
    address becomes active; an unsubscribed or bounced one is refused.
    """
    address = normalize_address(email)
    state = SubscriberState.PENDING if double_opt_in else SubscriberState.ACTIVE
    with store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is None:
            rows.insert_many(conn, [(address, clean_name(name), {})], state=state, now=now)
        elif existing.state is SubscriberState.ACTIVE:
            raise SubscriberError(why_not_added(address, existing.state))
        elif double_opt_in:
            rows.update_pending(
                conn,
                existing.id,
                name=clean_name(name) or existing.name,
                attrs=existing.attrs,
                now=now,
            )
        elif existing.state is SubscriberState.PENDING:
            rows.set_state(conn, existing.id, SubscriberState.ACTIVE, now=now)
        else:
            raise SubscriberError(why_not_added(address, existing.state))
        added = rows.get_by_email(conn, address)
    assert added is not None
    return added


def remove_subscriber(store: Store, email: str, *, now: datetime) -> bool:
    """Unsubscribe an address; it is kept so a later import cannot add it back silently.

    False when the address was already unsubscribed (nothing changes).
    """
    address = normalize_address(email)
    with store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is None:
            raise SubscriberError(f"{address} is not on the list")
        if existing.state is SubscriberState.UNSUBSCRIBED:
            return False
        return rows.set_state(conn, existing.id, SubscriberState.UNSUBSCRIBED, now=now)


def list_subscribers(
    store: Store, *, state: SubscriberState | None = None
) -> Iterator[tuple[str, str, str]]:
    """``(email, name, state)`` for every subscriber (or those in ``state``), streamed."""
    with store.atomic() as conn:
        for row in rows.iter_all(conn, state=state):
            yield row.email, row.name, row.state


__all__ = [
    "ImportReport",
    "add_subscriber",
    "clean_name",
    "export_csv",
    "import_csv",
    "list_subscribers",
    "normalize_address",
    "remove_subscriber",
]
