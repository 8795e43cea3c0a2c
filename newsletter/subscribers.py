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
EXPORT_COLUMNS = ["email", "name", "state", "created_at", "confirmed_at", "unsubscribed_at"]
MAX_TRACKED_ADDRESSES = 500_000  # ~60 MB at most for the repeat check


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
            raise SubscriberError(_why_not_added(address, existing.state))
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
            raise SubscriberError(_why_not_added(address, existing.state))
        added = rows.get_by_email(conn, address)
    assert added is not None
    return added


def _why_not_added(address: str, state: SubscriberState) -> str:
    if state is SubscriberState.UNSUBSCRIBED:
        return (
            f"{address} unsubscribed earlier and is never re-added silently; "
            "use --double-opt-in so they confirm themselves"
        )
    if state is SubscriberState.BOUNCED:
        return (
            f"{address} bounced earlier; use --double-opt-in to check the address with a "
            "confirmation email"
        )
    return f"{address} is already on the list ({state.value})"


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


@dataclass
class ImportReport:
    imported: int = 0  # added as active (or pending with double opt-in)
    kept_out: int = 0  # added as unsubscribed or bounced, from an exported ``state`` column
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    lines: int = 0


# Columns of an export that describe the record rather than the person: not attributes.
_RECORD_COLUMNS = frozenset(EXPORT_COLUMNS[2:])
_STATES = [s.value for s in SubscriberState]
_KEPT_OUT = {s.value: s for s in (SubscriberState.UNSUBSCRIBED, SubscriberState.BOUNCED)}


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
    name: str
    attrs: dict[str, str]
    kept_out: SubscriberState | None = None  # unsubscribed/bounced in the list it came from


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
    state_at = columns.index("state") if "state" in columns else None
    extra = [
        (i, attr_key(c))
        for i, c in enumerate(columns)
        if i not in (email_at, name_at) and c not in _RECORD_COLUMNS and attr_key(c)
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
        state = values[state_at].strip().lower() if state_at is not None else ""
        if state and state not in _STATES:
            known = ", ".join(_STATES)
            report.rejected.append((line, f"unknown state {state!r} (expected one of {known})"))
            continue
        name = clean_name(_uncell(values[name_at])) if name_at is not None else ""
        attrs = {key: _uncell(values[i].strip()) for i, key in extra}
        yield _Row(line, email, name, attrs, _KEPT_OUT.get(state))


def import_csv(
    store: Store,
    path: Path,
    *,
    now: datetime,
    double_opt_in: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[list[Subscriber]], None] | None = None,
) -> ImportReport:
    """Stream a CSV (``email,name`` plus any columns kept as attributes) into the list.

    Invalid rows are reported with their line and reason; the rest are imported. Addresses
    already on the list (any state, any case) are not added again: an unsubscribed address
    stays unsubscribed. Rows are committed in batches of ``IMPORT_BATCH``; ``on_batch`` gets
    the subscribers each batch added (after the commit), ``on_progress`` the lines read.

    Memory stays bounded: a repeated address is reported with the line it repeats for the
    first ``MAX_TRACKED_ADDRESSES`` addresses; beyond that the database catches repeats
    (reported as already on the list).
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
                if len(first_line) < MAX_TRACKED_ADDRESSES:
                    first_line[row.email] = row.line
                batch.append(row)
                if len(batch) >= IMPORT_BATCH:
                    _import_batch(store, batch, state, now, report, on_batch)
                    batch = []
                    if on_progress:
                        on_progress(report.lines)
            _import_batch(store, batch, state, now, report, on_batch)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError:
        raise UsageError(
            f"{path}: not UTF-8 text after line {report.lines + 1} (save the CSV as UTF-8); "
            f"{report.imported} rows before it were imported"
        ) from None
    except csv.Error as exc:
        raise UsageError(
            f"{path}: line {report.lines + 1}: not a readable CSV file: {exc}; "
            f"{report.imported} rows before it were imported"
        ) from None
    if on_progress:
        on_progress(report.lines)
    report.rejected.sort()
    return report


def _import_batch(
    store: Store,
    batch: list[_Row],
    state: SubscriberState,
    now: datetime,
    report: ImportReport,
    on_batch: Callable[[list[Subscriber]], None] | None,
) -> None:
    if not batch:
        return
    by_email: dict[str, _Row] = {}
    for r in batch:  # repeats past the tracked addresses, within this batch
        if r.email in by_email:
            report.rejected.append((r.line, f"{r.email} repeats line {by_email[r.email].line}"))
        else:
            by_email[r.email] = r
    with store.atomic() as conn:
        known = rows.states_of(conn, list(by_email))
        new = [r for r in by_email.values() if r.email not in known and r.kept_out is None]
        for r in by_email.values():
            if r.email in known:
                report.rejected.append(
                    (r.line, _why_not_added(r.email, SubscriberState(known[r.email])))
                )
            elif r.kept_out is not None:  # stays out: never sent to, even after a move
                rows.insert_many(conn, [(r.email, r.name, r.attrs)], state=r.kept_out, now=now)
                report.kept_out += 1
        report.imported += rows.insert_many(
            conn, [(r.email, r.name, r.attrs) for r in new], state=state, now=now
        )
        added = rows.get_many_by_email(conn, [r.email for r in new]) if on_batch else []
    if on_batch and added:
        on_batch(added)


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
                [row.email, _cell(row.name), row.state]
                + [_iso(getattr(row, c)) for c in EXPORT_COLUMNS[3:]]
                + [_cell(attrs.get(k, "")) for k in extra]
            )
            count += 1
    return count


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """Names come from a public form: keep spreadsheets from running them as formulas."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _uncell(value: str) -> str:
    """Undo :func:`_cell` so an exported file imports back unchanged."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def list_subscribers(
    store: Store, *, state: SubscriberState | None = None
) -> Iterator[tuple[str, str, str]]:
    """``(email, name, state)`` for every subscriber (or those in ``state``), streamed."""
    with store.atomic() as conn:
        for row in rows.iter_all(conn, state=state):
            yield row.email, row.name, row.state
