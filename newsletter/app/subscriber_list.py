"""The operator's view of the list: unsubscribe an address, list and export the subscribers.

Adding and importing (which may mail confirmations) are in :mod:`newsletter.app.subscriptions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

from newsletter.app.context import Context
from newsletter.models import SubscriberState
from newsletter.subscriber_rules import normalize_address
from newsletter.subscribers import export_csv, list_subscribers, remove_subscriber


def remove(ctx: Context, email: str) -> tuple[str, bool]:
    """Unsubscribe an address: its normalized form, and False if it already was.

    The address stays on the list as unsubscribed, so no import adds it back silently;
    ``SubscriberError`` when it is not on the list at all.
    """
    address = normalize_address(email)
    return address, remove_subscriber(ctx.store, address, now=ctx.clock())


def subscribers(
    ctx: Context, *, state: SubscriberState | None = None
) -> Iterator[tuple[str, str, str]]:
    """``(email, name, state)`` of every subscriber (or those in ``state``), streamed."""
    return list_subscribers(ctx.store, state=state)


def export(ctx: Context, out: TextIO) -> int:
    """Write the whole list to ``out`` as CSV (states, dates, link ids, attributes); how many."""
    return export_csv(ctx.store, out)
