"""The subscriber list: validation, add/remove, CSV import and export."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import SubscriberError, UsageError
from newsletter.models import Subscriber, SubscriberState
from newsletter.personalization import attr_key
from newsletter.store import Store
from newsletter.store import subscribers as rows

MAX_NAME = 200
IMPORT_BATCH = 1000


def normalize_address(raw: str) -> str:
    """The canonical, lowercased form of an address; ``SubscriberError`` if it is not valid."""
    candidate = raw.strip()
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{candidate!r} is not a valid email address: {exc}") from None
    return result.normalized.lower()


def clean_name(raw: str) -> str:
    """A display name without control characters, at most 200 characters."""
    return " ".join(raw.split())[:MAX_NAME]


def add_subscriber(
    store: Store, email: str, name: str = "", *, now: datetime, double_opt_in: bool = False
) -> Subscriber:
    """Add one address: active (the operator vouches for consent) or pending confirmation."""
    address = normalize_address(email)
    state = SubscriberState.PENDING if double_opt_in else SubscriberState.ACTIVE
    with store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is not None:
            if existing.state is SubscriberState.UNSUBSCRIBED and double_opt_in:
                rows.update_pending(
                    conn, existing.id, name=clean_name(name), attrs=existing.attrs, now=now
                )
            else:
                raise SubscriberError(_why_not_added(address, existing.state))
        else:
            rows.insert_many(conn, [(address, clean_name(name), {})], state=state, now=now)
        added = rows.get_by_email(conn, address)
    assert added is not None
    return added


def _why_not_added(address: str, state: SubscriberState) -> str:
    if state is SubscriberState.UNSUBSCRIBED:
        return (
            f"{address} unsubscribed earlier and is never re-added silently; "
            "use --double-opt-in so they confirm themselves"
        )
    return f"{address} is already on the list ({state.value})"


def remove_subscriber(store: Store, email: str, *, now: datetime) -> None:
    """Unsubscribe an address; it is kept so a later import cannot add it back silently."""
    address = normalize_address(email)
    with store.atomic() as conn:
        existing = rows.get_by_email(conn, address)
        if existing is None:
            raise SubscriberError(f"{address} is not on the list")
        rows.set_state(conn, existing.id, SubscriberState.UNSUBSCRIBED, now=now)


@dataclass
class ImportReport:
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    lines: int = 0


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str
    attrs: dict[str, str]


def _read_rows(handle: TextIO, source: str, report: ImportReport) -> Iterator[_Row]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(
            f"{source}: the file is empty; expected a header line 'email,name'"
        ) from None
    columns = [c.strip().lower() for c in header]
    if "email" not in columns:
        raise UsageError(f"{source}: line 1: no 'email' column in the header {header!r}")
    email_at = columns.index("email")
    name_at = columns.index("name") if "name" in columns else None
    extra = [
        (i, attr_key(c))
        for i, c in enumerate(columns)
        if i not in (email_at, name_at) and attr_key(c)
    ]
    for values in reader:
        line = reader.line_num
        report.lines += 1
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(columns):
            report.rejected.append((line, f"expected {len(columns)} columns, found {len(values)}"))
            continue
        try:
            email = normalize_address(values[email_at])
        except SubscriberError as exc:
            report.rejected.append((line, str(exc)))
            continue
        name = clean_name(values[name_at]) if name_at is not None else ""
        yield _Row(line, email, name, {key: values[i].strip() for i, key in extra})


def import_csv(
    store: Store,
    path: Path,
    *,
    now: datetime,
    double_opt_in: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Stream a CSV (``email,name`` plus any columns kept as attributes) into the list.

    Invalid rows are reported with their line and reason; the rest are imported. Addresses
    already on the list (any state, any case) are not added again.
    """
    report = ImportReport()
    state = SubscriberState.PENDING if double_opt_in else SubscriberState.ACTIVE
    first_line: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            batch: list[_Row] = []
            for row in _read_rows(handle, str(path), report):
                if row.email in first_line:
                    report.rejected.append(
                        (row.line, f"{row.email} repeats line {first_line[row.email]}")
                    )
                    continue
                first_line[row.email] = row.line
                batch.append(row)
                if len(batch) >= IMPORT_BATCH:
                    _import_batch(store, batch, state, now, report)
                    batch = []
                    if on_progress:
                        on_progress(report.lines)
            _import_batch(store, batch, state, now, report)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8"
        ) from None
    except csv.Error as exc:
        raise UsageError(f"{path}: not a readable CSV file: {exc}") from None
    if on_progress:
        on_progress(report.lines)
    report.rejected.sort()
    return report


def _import_batch(
    store: Store, batch: list[_Row], state: SubscriberState, now: datetime, report: ImportReport
) -> None:
    if not batch:
        return
    with store.atomic() as conn:
        known = rows.states_of(conn, [r.email for r in batch])
        new = [r for r in batch if r.email not in known]
        for r in batch:
            if r.email in known:
                report.rejected.append(
                    (r.line, _why_not_added(r.email, SubscriberState(known[r.email])))
                )
        report.imported += rows.insert_many(
            conn, [(r.email, r.name, r.attrs) for r in new], state=state, now=now
        )


EXPORT_COLUMNS = ["email", "name", "state", "created_at", "confirmed_at", "unsubscribed_at"]


def export_csv(store: Store, out: TextIO) -> int:
    """Write every subscriber with state and dates (and attributes as extra columns)."""
    with store.atomic() as conn:
        attr_names: set[str] = set()
        for row in rows.iter_all(conn):
            attr_names.update(rows.decode_attrs(row.attrs))
        extra = sorted(attr_names)
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS + extra)
        count = 0
        for row in rows.iter_all(conn):
            attrs = rows.decode_attrs(row.attrs)
            writer.writerow(
                [row.email, row.name, row.state]
                + [_iso(getattr(row, c)) for c in EXPORT_COLUMNS[3:]]
                + [attrs.get(k, "") for k in extra]
            )
            count += 1
    return count


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def list_subscribers(store: Store) -> Iterator[tuple[str, str, str]]:
    """``(email, name, state)`` for every subscriber, streamed."""
    with store.atomic() as conn:
        for row in rows.iter_all(conn):
            yield row.email, row.name, row.state
