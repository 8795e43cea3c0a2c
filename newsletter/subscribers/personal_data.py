"""Everything stored about one person (access), and erasure on request (GDPR art. 15, 17).

Erasure deletes the subscriber row with its attributes, every delivery row and bounce report
(an SMTP reply there may quote the address) and any queued sign-up request, and keeps only
the keyed hash of the address on the suppression list, so no import brings it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from newsletter.store import bounce_reports as report_rows
from newsletter.store import personal_data as person_rows
from newsletter.store import signup_requests as request_rows
from newsletter.store import subscribers as rows
from newsletter.subscribers.suppression import Reason, SuppressionList


@dataclass(frozen=True)
class Forgotten:
    """What ``forget`` deleted."""

    address: str
    was_listed: bool
    deliveries: int
    requests: int


def forget(
    conn: Connection, address: str, *, now: datetime, suppressions: SuppressionList
) -> Forgotten:
    """Delete what is stored about ``address`` (normalized), keeping only its keyed hash."""
    suppressions.add(conn, address, Reason.FORGOTTEN, now=now)
    found = rows.get_by_email(conn, address)
    deliveries = 0
    if found is not None:
        report_rows.delete_reports_of(conn, found.id)
        deliveries = person_rows.delete_deliveries_of(conn, found.id)
        rows.delete_subscriber(conn, found.id)
    requests = request_rows.delete_address(conn, address)
    return Forgotten(address, found is not None, deliveries, requests)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def describe(conn: Connection, address: str, *, suppressions: SuppressionList) -> dict[str, Any]:
    """Everything stored about ``address`` (normalized), as JSON-ready values."""
    row = rows.row_by_email(conn, address)
    subscriber: dict[str, Any] | None = None
    deliveries: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    if row is not None:
        subscriber = {key: _plain(value) for key, value in row._mapping.items()}
        subscriber["attrs"] = json.loads(subscriber["attrs"] or "{}")
        deliveries = [
            {key: _plain(value) for key, value in delivery.items()}
            for delivery in person_rows.deliveries_of(conn, row.id)
        ]
        reports = [
            {key: _plain(value) for key, value in report.items()}
            for report in report_rows.reports_of(conn, row.id)
        ]
    entry = suppressions.find(conn, address)
    return {
        "email": address,
        "subscriber": subscriber,
        "deliveries": deliveries,
        "bounce_reports": reports,
        "signup_requests": [
            {"name": r.name, "requested_at": r.requested_at.isoformat()}
            for r in request_rows.of_address(conn, address)
        ],
        "suppressed": (
            {"reason": entry.reason.value, "since": entry.since.isoformat()} if entry else None
        ),
    }
