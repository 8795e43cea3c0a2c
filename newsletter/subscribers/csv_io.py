"""The CSV format of subscriber lists: reading any list, and writing our export.

Any CSV with an ``email`` column reads: ``name`` is the name and every other column an
attribute (``{{ subscriber.attrs.city }}``), a ``state`` column included. Only a file whose
header starts with exactly our export's columns is read as an export: its states, dates and
link ids (``public_id``, ``legacy_id``) are kept.

Files are read as bytes, line by line, so that a bad byte, an overlong line or a broken
quote costs only its own record, and line numbers stay right after it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, TextIO

from newsletter.errors import SubscriberError, UsageError
from newsletter.models import SubscriberState
from newsletter.personalization import attr_key
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.store.schema import is_public_id, legacy_id_from
from newsletter.subscribers.addresses import clean_attr, clean_name, normalize_address

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
MAX_LINE_BYTES = 1 << 20
_SEP_LINE = re.compile(r"sep=([,;\t|])\r?\n?")  # Excel's first line naming the delimiter


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


def _layout(header: list[str], where: str, notes: list[str]) -> _Layout:
    if _has_bad_bytes(header):
        raise UsageError(f"{where}: the header is not UTF-8 text (save the CSV as UTF-8)")
    for fixed, with_ids in ((EXPORT_COLUMNS, True), (FIRST_RELEASE_EXPORT_COLUMNS, False)):
        if header[: len(fixed)] == fixed:
            attrs = _attr_columns(header, range(len(fixed), len(header)), where, notes)
            return _Layout(len(header), 0, 1, attrs, export=True, with_ids=with_ids)
    lowered = [c.strip().lower() for c in header]
    emails = [i for i, c in enumerate(lowered) if c == "email"]
    names = [i for i, c in enumerate(lowered) if c == "name"]
    if not emails:
        shown = repr(header)[:200]
        raise UsageError(f"{where}: no 'email' column in the header {shown}{_hint(header)}")
    if len(emails) > 1 or len(names) > 1:
        twice = "email" if len(emails) > 1 else "name"
        raise UsageError(f"{where}: the header has two '{twice}' columns; remove one")
    others = [i for i in range(len(header)) if i not in (*emails, *names)]
    attrs = _attr_columns(header, others, where, notes)
    return _Layout(len(header), emails[0], names[0] if names else None, attrs)


def _attr_columns(
    header: list[str], indexes: range | list[int], where: str, notes: list[str]
) -> list[tuple[int, str]]:
    """``(index, attribute key)`` per column; two columns with one key are refused."""
    seen: dict[str, str] = {}
    columns = []
    for i in indexes:
        title, key = header[i].strip(), attr_key(header[i])
        if not key:
            if title:
                notes.append(
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
        legacy_id=legacy_id_from(legacy_id),
    )


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


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (
            f"a field is longer than {csv.field_size_limit()} characters, row skipped "
            "(a missing closing quote?)"
        )
    return f"not readable as CSV ({exc}), row skipped"


@dataclass(frozen=True)
class Parsed:
    """One record of the file: its subscriber, or why it is refused. ``line`` is where it
    starts (a quoted field can span lines)."""

    line: int
    record: rows.SubscriberRecord | None
    reason: str = ""


class SubscriberCsv:
    """A subscriber CSV being read: the header is checked on opening, then :meth:`rows`.

    Generic rows get ``state`` (and ``now`` as their dates); an export's rows keep theirs.
    ``UsageError`` for a header that cannot work, with a hint where one helps.
    """

    def __init__(
        self, handle: BinaryIO, source: str, *, state: SubscriberState, now: datetime
    ) -> None:
        self.lines = _Lines(handle)
        self.notes: list[str] = []  # about the header, e.g. ignored columns
        header, self.delimiter, self.header_line = _header(self.lines, source)
        self.layout = _layout(header, f"{source}: line {self.header_line}", self.notes)
        self.state, self.now = state, now

    @property
    def is_export(self) -> bool:
        """True for one of our exports: states, dates (and link ids) are kept."""
        return self.layout.export

    @property
    def lines_read(self) -> int:
        """Physical lines read after the header."""
        return self.lines.count - self.header_line

    def rows(self) -> Iterator[Parsed]:
        """Every non-blank record; a broken one costs only itself."""
        reader = csv.reader(self.lines, delimiter=self.delimiter)
        end = self.lines.count
        while True:
            start = end + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                end = self.lines.count
                self.lines.overlong.clear()
                yield Parsed(start, None, _csv_problem(exc))
                continue
            end = self.lines.count
            overlong = sorted(n for n in self.lines.overlong if start <= n <= end)
            self.lines.overlong.clear()
            if overlong:
                kib = MAX_LINE_BYTES // 1024
                yield Parsed(overlong[0], None, f"line longer than {kib} KiB, skipped")
            elif any(v.strip() for v in values):
                yield self._parse(start, values)

    def _parse(self, line: int, values: list[str]) -> Parsed:
        if _has_bad_bytes(values):
            return Parsed(line, None, "not UTF-8 text (save the CSV as UTF-8)")
        if len(values) != self.layout.width:
            return Parsed(line, None, f"expected {self.layout.width} columns, found {len(values)}")
        try:
            return Parsed(line, _record(values, self.layout, self.state, self.now))
        except SubscriberError as exc:
            return Parsed(line, None, str(exc))


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
