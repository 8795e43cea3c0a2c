"""The subscriber list: who is on it, in which state, and how they got there.

- :mod:`.lifecycle`: the states and every transition (add, sign-up, confirm, unsubscribe,
  bounce, complaint); whatever changes a subscriber's state goes through it.
- :mod:`.addresses`: what a record may hold (the normalized address, cleaned names and
  attributes, a sign-up's name).
- :mod:`.suppression`: addresses never made active again by an import (keyed hashes).
- :mod:`.personal_data`: everything stored about one person, and erasure.
- :mod:`.csv_io` and :mod:`.importing`: the CSV format, and importing a list in batches.

The operator's verbs on a whole store are here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from newsletter.errors import SubscriberError
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.subscribers import lifecycle
from newsletter.subscribers.addresses import clean_name, normalize_address
from newsletter.subscribers.csv_io import export_csv
from newsletter.subscribers.importing import ImportReport, import_csv
from newsletter.subscribers.suppression import SuppressionList


def add_subscriber(
    store: Store,
    email: str,
    name: str = "",
    *,
    now: datetime,
    double_opt_in: bool = False,
    suppressions: SuppressionList | None = None,
) -> Subscriber:
    """Add one address, active or pending (see :func:`lifecycle.add`), in one transaction.

    Mailing the confirmation is the caller's (``app.subscriptions.add`` queues it with the
    change); ``suppressions`` None skips the suppression list (a fresh test database).
    """
    address = normalize_address(email)
    with store.atomic() as conn:
        return lifecycle.add(
            conn,
            address,
            clean_name(name),
            now=now,
            double_opt_in=double_opt_in,
            suppressions=suppressions,
        )


def remove_subscriber(store: Store, email: str, *, now: datetime) -> bool:
    """Unsubscribe an address; it is kept so a later import cannot add it back silently.

    False when the address was already unsubscribed (nothing changes).
    """
    address = normalize_address(email)
    with store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is None:
            raise SubscriberError(f"{address} is not on the list")
        return lifecycle.unsubscribe(conn, existing.id, now=now)


def list_subscribers(
    store: Store, *, state: SubscriberState | None = None
) -> Iterator[tuple[str, str, str, str]]:
    """``(email, name, state, reason)`` for every subscriber (or those in ``state``),
    streamed; the reason (a bounce's reply, ``complaint``) is ``""`` when there is none."""
    with store.atomic() as conn:
        for row in rows.iter_all(conn, state=state):
            yield row.email, row.name, row.state, row.state_reason or ""


__all__ = [
    "ImportReport",
    "add_subscriber",
    "export_csv",
    "import_csv",
    "list_subscribers",
    "normalize_address",
    "remove_subscriber",
]
