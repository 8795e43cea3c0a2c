"""CSV import and export of the subscriber list.

Any CSV with an ``email`` column imports: ``name`` is the name and every other column an
attribute (``{{ subscriber.attrs.city }}``), a ``state`` column included. Only a file whose
header starts with exactly our export's columns is read as an export: its states, dates and
link ids (``public_id``, ``legacy_id``) are kept, so that the links in emails already
delivered still name the same person after a move to a fresh database (or are refused when
an id is taken there, never pointed at someone else).

Files are read as bytes, line by line, so that a bad byte, an overlong line or a broken
quote costs only its own row, and line numbers stay right after it. Memory stays flat:
rows go to the database in batches, and the report keeps the first ``MAX_REPORTED``
rejections (``on_reject`` gets every one, to write them all to a file).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from sqlalchemy import Connection

from newsletter.errors import SubscriberError, UsageError
from newsletter.models import Subscriber, SubscriberState
from newsletter.personalization import attr_key
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.store.schema import is_public_id
from newsletter.subscriber_rules import clean_attr, clean_name, normalize_address, why_not_added

EXPORT_COLUMNS = [
    "email",
    "name",
    "state",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "public_id",
    "legacy_id",
]
FIRST_RELEASE_EXPORT_COLUMNS = EXPORT_COLUMNS[:6]  # 0.1.0 exported no link ids
IMPORT_BATCH = 1000
MAX_TRACKED_ADDRESSES = 500_000  # ~60 MB at most for the repeat check
MAX_REPORTED = 20  # rejections kept in the report; the rest are counted (and passed on)
MAX_LINE_BYTES = 1 << 20
_SEP_LINE = re.compile(r"sep=([,;\t|])\r?\n?")  # Excel's first line naming the delimiter
_LEGACY_ID = re.compile(r"[1-9][0-9]{0,17}")
_KEPT_OUT = (SubscriberState.UNSUBSCRIBED, SubscriberState.BOUNCED)

OnReject = Callable[[int, str], None]


@dataclass
class ImportReport:
    imported: int = 0  # added as active or pending
    kept_out: int = 0  # added as unsubscribed or bounced, from an export
    rejected: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_REPORTED
    rejected_count: int = 0
    lines: int = 0  # data lines read
    from_export: bool = False  # the file was one of our exports: states and dates kept
    new_links: int = 0  # exported rows whose link id was taken here: old links refused
    notes: list[str] = field(default_factory=list)  # about the header, e.g. ignored columns


class _Lines:
    """The file's physical lines as text; ``count`` is how many were read.

    Bad bytes are kept as surrogate escapes (their row is refused, not the file); a line
    longer than ``MAX_LINE_BYTES`` is skipped, read as an empty line and noted in ``overlong``.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.count = 0
        self.overlong: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline(MAX_LINE_BYTES)
        if not raw:
            raise StopIteration
        self.count += 1
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := self.handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            self.overlong.add(self.count)
            return "\n"
        text = raw.decode("utf-8", "surrogateescape")
        return text.removeprefix("\ufeff") if self.count == 1 else text


def _has_bad_bytes(values: list[str]) -> bool:
    return any(not v.isascii() and re.search("[\udc80-\udcff]", v) for v in values)


@dataclass(frozen=True)
class _Layout:
    """Which column is what."""

    width: int
    email_at: int
    name_at: int | None
    attrs: list[tuple[int, str]]
    export: bool = False  # our export: state and dates (and link ids when ``with_ids``)
    with_ids: bool = False


def _layout(header: list[str], where: str, report: ImportReport) -> _Layout:
    if _has_bad_bytes(header):
        raise UsageError(f"{where}: the header is not UTF-8 text (save the CSV as UTF-8)")
    for fixed, with_ids in ((EXPORT_COLUMNS, True), (FIRST_RELEASE_EXPORT_COLUMNS, False)):
        if header[: len(fixed)] == fixed:
            attrs = _attr_columns(header, range(len(fixed), len(header)), where, report)
            return _Layout(len(header), 0, 1, attrs, export=True, with_ids=with_ids)
    lowered = [c.strip().lower() for c in header]
    emails = [i for i, c in enumerate(lowered) if c == "email"]
    names = [i for i, c in enumerate(lowered) if c == "name"]
    if not emails:
        raise UsageError(f"{where}: no 'email' column in the header {header!r}{_hint(header)}")
    if len(emails) > 1 or len(names) > 1:
        twice = "email" if len(emails) > 1 else "name"
        raise UsageError(f"{where}: the header has two '{twice}' columns; remove one")
    others = [i for i in range(len(header)) if i not in (*emails, *names)]
    attrs = _attr_columns(header, others, where, report)
    return _Layout(len(header), emails[0], names[0] if names else None, attrs)


def _attr_columns(
    header: list[str], indexes: range | list[int], where: str, report: ImportReport
) -> list[tuple[int, str]]:
    """``(index, attribute key)`` per column; two columns with one key are refused."""
    seen: dict[str, str] = {}
    columns = []
    for i in indexes:
        title, key = header[i].strip(), attr_key(header[i])
        if not key:
            if title:
                report.notes.append(
                    f"column {title!r} ignored: attribute names need letters, digits or _ "
                    "(rename it to use it in templates)"
                )
            continue
        if key in seen:
            raise UsageError(
                f"{where}: columns {seen[key]!r} and {title!r} would both be the attribute "
                f"{key!r}; rename or remove one"
            )
        seen[key] = title
        columns.append((i, key))
    return columns


def _hint(header: list[str]) -> str:
    line = ",".join(header)
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if "email" in (c.strip().strip('"').lower() for c in line.split(delimiter)):
            return (
                f"; the columns look separated by {name}: save the file as comma-separated "
                f"CSV, or make its first line sep={delimiter}"
            )
    return ""


@dataclass(frozen=True)
class _Row:
    line: int
    record: rows.SubscriberRecord


def _parse_date(value: str, column: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise SubscriberError(f"{column} {value[:40]!r} is not an ISO 8601 date") from None


def _record(
    values: list[str], layout: _Layout, state: SubscriberState, now: datetime
) -> rows.SubscriberRecord:
    """The row's record; ``SubscriberError`` saying what is wrong with it."""
    email = normalize_address(values[layout.email_at])
    name = clean_name(_uncell(values[layout.name_at])) if layout.name_at is not None else ""
    attrs = {key: clean_attr(_uncell(values[i])) for i, key in layout.attrs}
    if not layout.export:
        confirmed = now if state is SubscriberState.ACTIVE else None
        return rows.SubscriberRecord(email, name, state, now, attrs, confirmed_at=confirmed)
    try:
        exported_state = SubscriberState(values[2].strip().lower())
    except ValueError:
        known = ", ".join(s.value for s in SubscriberState)
        raise SubscriberError(
            f"unknown state {values[2][:40]!r} (expected one of {known})"
        ) from None
    created = _parse_date(values[3], "created_at")
    if created is None:
        raise SubscriberError("created_at is empty (this row is not as our export wrote it)")
    public_id = values[6].strip() if layout.with_ids else ""
    legacy_id = values[7].strip() if layout.with_ids else ""
    return rows.SubscriberRecord(
        email,
        name,
        exported_state,
        created,
        attrs,
        confirmed_at=_parse_date(values[4], "confirmed_at"),
        unsubscribed_at=_parse_date(values[5], "unsubscribed_at"),
        public_id=public_id if is_public_id(public_id) else None,
        legacy_id=int(legacy_id) if _LEGACY_ID.fullmatch(legacy_id) else None,
    )


class _Import:
    """One import run: reads rows, stores them in batches, streams the rejections."""

    def __init__(
        self,
        store: Store,
        report: ImportReport,
        *,
        on_reject: OnReject | None,
        on_batch: Callable[[list[Subscriber]], None] | None,
    ) -> None:
        self.store = store
        self.report = report
        self.on_reject = on_reject
        self.on_batch = on_batch
        self.batch: list[_Row] = []
        self.rejections: list[tuple[int, str]] = []
        self.first_line: dict[str, int] = {}

    def reject(self, line: int, reason: str) -> None:
        self.rejections.append((line, reason))

    def add(self, row: _Row) -> None:
        email = row.record.email
        if email in self.first_line:
            self.reject(row.line, f"{email} repeats line {self.first_line[email]}")
            return
        if len(self.first_line) < MAX_TRACKED_ADDRESSES:
            self.first_line[email] = row.line
        self.batch.append(row)

    def flush(self, now: datetime) -> None:
        """Store the batch (one transaction), then pass on its rejections in line order."""
        added = self._store(self.batch, now) if self.batch else []
        self.batch = []
        report = self.report
        for line, reason in sorted(self.rejections):
            report.rejected_count += 1
            if len(report.rejected) < MAX_REPORTED:
                report.rejected.append((line, reason))
            if self.on_reject is not None:
                self.on_reject(line, reason)
        self.rejections = []
        if self.on_batch is not None and added:
            self.on_batch(added)

    def _store(self, batch: list[_Row], now: datetime) -> list[Subscriber]:
        by_email: dict[str, _Row] = {}
        for r in batch:  # repeats past the tracked addresses, within this batch
            if r.record.email in by_email:
                first = by_email[r.record.email].line
                self.reject(r.line, f"{r.record.email} repeats line {first}")
            else:
                by_email[r.record.email] = r
        with self.store.atomic() as conn:
            known = rows.states_of(conn, list(by_email))
            for r in by_email.values():
                if r.record.email in known:
                    state = SubscriberState(known[r.record.email])
                    self.reject(r.line, why_not_added(r.record.email, state))
            fresh = [r.record for r in by_email.values() if r.record.email not in known]
            fresh = self._free_link_ids(conn, fresh)
            rows.insert_records(conn, fresh, now=now)
            kept_out = sum(1 for r in fresh if r.state in _KEPT_OUT)
            self.report.kept_out += kept_out
            self.report.imported += len(fresh) - kept_out
            if self.on_batch is None:
                return []
            return rows.get_many_by_email(
                conn, [r.email for r in fresh if r.state not in _KEPT_OUT]
            )

    def _free_link_ids(
        self, conn: Connection, records: list[rows.SubscriberRecord]
    ) -> list[rows.SubscriberRecord]:
        """Link ids already naming someone here are dropped: their old links get refused."""
        taken_public = rows.taken_public_ids(conn, [r.public_id for r in records if r.public_id])
        taken_legacy = rows.taken_legacy_ids(conn, [r.legacy_id for r in records if r.legacy_id])
        freed = []
        for r in records:
            public_id = None if r.public_id in taken_public else r.public_id
            legacy_id = None if r.legacy_id in taken_legacy else r.legacy_id
            if (public_id, legacy_id) != (r.public_id, r.legacy_id):
                self.report.new_links += 1
                r = dataclasses.replace(r, public_id=public_id, legacy_id=legacy_id)
            if r.public_id:
                taken_public.add(r.public_id)
            if r.legacy_id:
                taken_legacy.add(r.legacy_id)
            freed.append(r)
        return freed


def _header(lines: _Lines, source: str) -> tuple[list[str], str, int]:
    """The header cells, the delimiter (``sep=X`` first line honoured) and the header's line."""
    first = next(lines, None)
    delimiter = ","
    sep = _SEP_LINE.fullmatch(first) if first is not None else None
    if sep is not None:
        delimiter, first = sep.group(1), next(lines, None)
    if first is None or not first.strip():
        raise UsageError(f"{source}: the file is empty; expected a header line 'email,name'")
    try:
        header = next(csv.reader([first], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise UsageError(
            f"{source}: line {lines.count}: not a readable CSV header: {exc}"
        ) from None
    return header, delimiter, lines.count


def _records(
    lines: _Lines,
    delimiter: str,
    layout: _Layout,
    run: _Import,
    state: SubscriberState,
    now: datetime,
) -> Iterator[None]:
    """Read every record into ``run``; yields after each line so the caller can flush."""
    reader = csv.reader(lines, delimiter=delimiter)
    end = lines.count
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            end = lines.count
            lines.overlong.clear()
            run.reject(start, _csv_problem(exc))
            yield
            continue
        end = lines.count
        overlong = sorted(n for n in lines.overlong if start <= n <= end)
        lines.overlong.clear()
        if overlong:
            run.reject(overlong[0], f"line longer than {MAX_LINE_BYTES // 1024} KiB, skipped")
        elif not any(v.strip() for v in values):
            pass
        elif _has_bad_bytes(values):
            run.reject(start, "not UTF-8 text (save the CSV as UTF-8)")
        elif len(values) != layout.width:
            run.reject(start, f"expected {layout.width} columns, found {len(values)}")
        else:
            try:
                run.add(_Row(start, _record(values, layout, state, now)))
            except SubscriberError as exc:
                run.reject(start, str(exc))
        yield


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"a field is longer than {csv.field_size_limit()} characters, row skipped "
            "(a missing closing quote?)"
        )
    return f"not readable as CSV ({exc}), row skipped"


def import_csv(
    store: Store,
    path: Path,
    *,
    now: datetime,
    double_opt_in: bool = False,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[list[Subscriber]], None] | None = None,
    on_reject: OnReject | None = None,
) -> ImportReport:
    """Stream a CSV (``email,name`` plus any columns kept as attributes) into the list.

    Invalid rows are reported with their line and reason; the rest are imported. Addresses
    already on the list (any state, any case) are not added again: an unsubscribed address
    stays unsubscribed. New addresses are active, or pending with ``double_opt_in``; an
    export keeps its own states and dates (and refuses ``double_opt_in``). Rows are committed
    in batches of ``IMPORT_BATCH``; ``on_batch`` gets the subscribers each batch added
    (after the commit), ``on_progress`` the lines read, ``on_reject`` every rejected row.

    A repeated address is reported with the line it repeats for the first
    ``MAX_TRACKED_ADDRESSES`` addresses; beyond that the database catches repeats.
    """
    report = ImportReport()
    state = SubscriberState.PENDING if double_opt_in else SubscriberState.ACTIVE
    run = _Import(store, report, on_reject=on_reject, on_batch=on_batch)
    try:
        with path.open("rb") as handle:
            lines = _Lines(handle)
            header, delimiter, header_line = _header(lines, str(path))
            layout = _layout(header, f"{path}: line {header_line}", report)
            report.from_export = layout.export
            if layout.export and double_opt_in:
                raise UsageError(
                    f"{path} is an export of a subscriber list: import it without "
                    "--double-opt-in (its states are kept: pending stays pending)"
                )
            flushed_at = lines.count
            for _ in _records(lines, delimiter, layout, run, state, now):
                report.lines = lines.count - header_line
                if lines.count - flushed_at >= IMPORT_BATCH:  # rows and rejections bounded
                    run.flush(now)
                    flushed_at = lines.count
                    if on_progress:
                        on_progress(report.lines)
            run.flush(now)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a CSV file") from None
    except PermissionError:
        raise UsageError(f"{path}: cannot read the file (permission denied)") from None
    if on_progress:
        on_progress(report.lines)
    return report


def export_csv(store: Store, out: TextIO) -> int:
    """Write every subscriber with state, dates and link ids (attributes as extra columns)."""
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
                + [_iso(getattr(row, c)) for c in EXPORT_COLUMNS[3:6]]
                + [row.public_id, "" if row.legacy_id is None else str(row.legacy_id)]
                + [_cell(attrs.get(k, "")) for k in extra]
            )
            count += 1
    return count


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""  # to the microsecond: dates survive a move


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """Names come from a public form: keep spreadsheets from running them as formulas."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _uncell(value: str) -> str:
    """Undo :func:`_cell` so an exported file imports back unchanged."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value
