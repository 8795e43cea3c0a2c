"""The operator's view of the list: unsubscribe, list, export, show and forget one person.

Adding and importing (which may mail confirmations) are in :mod:`newsletter.app.subscriptions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

from newsletter.app.context import Context
from newsletter.models import SubscriberState
from newsletter.subscribers import export_csv, list_subscribers, remove_subscriber
from newsletter.subscribers.addresses import normalize_address, printable
from newsletter.subscribers.personal_data import Forgotten, describe, forget


def remove(ctx: Context, email: str) -> tuple[str, bool]:
    """Unsubscribe an address: its normalized form, and False if it already was.

    The address stays on the list as unsubscribed, so no import adds it back silently;
    ``SubscriberError`` when it is not on the list at all.
    """
    address = normalize_address(email)
    return address, remove_subscriber(ctx.store, address, now=ctx.clock())


def subscribers(
    ctx: Context, *, state: SubscriberState | None = None
) -> Iterator[tuple[str, str, str, str]]:
    """``(email, name, state, reason)`` of every subscriber (or those in ``state``), streamed."""
    return list_subscribers(ctx.store, state=state)


def export(ctx: Context, out: TextIO) -> int:
    """Write the whole list to ``out`` as CSV (states, dates, link ids, attributes); how many."""
    return export_csv(ctx.store, out)


def show(ctx: Context, email: str) -> dict[str, Any]:
    """Everything stored about one address (GDPR access), as JSON-ready values."""
    address = normalize_address(email)
    with ctx.store.atomic() as conn:
        return describe(conn, address, suppressions=ctx.suppressions)


def forget_person(ctx: Context, email: str) -> Forgotten:
    """Erase what is stored about one address (GDPR erasure), keeping only a keyed hash so
    that no import or ``add`` brings it back."""
    address = normalize_address(email)
    with ctx.store.atomic() as conn:
        return forget(conn, address, now=ctx.clock(), suppressions=ctx.suppressions)


def shown(value: str) -> str:
    """``value`` for a terminal: control characters escaped, as input is cleaned."""
    return printable(value)
