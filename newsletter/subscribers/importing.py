"""Importing a subscriber CSV into the store: in batches, with a streamed rejection report.

Rows are committed in batches of ``IMPORT_BATCH``; addresses already on the list are not
added again (an unsubscribed address stays out), nor are suppressed ones (see
:func:`newsletter.subscribers.lifecycle.import_refusal`). Memory stays flat for any file: the report
keeps the first ``MAX_REPORTED`` rejections and counts the rest (``on_reject`` gets every
one, to write them all to a file). Link ids from an export that already name someone here
are dropped, so the old links of that row are refused rather than shared.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection

from newsletter.errors import UsageError
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.subscribers.csv_io import SubscriberCsv
from newsletter.subscribers.lifecycle import import_refusal
from newsletter.subscribers.suppression import SuppressionList

IMPORT_BATCH = 1000
MAX_TRACKED_ADDRESSES = 500_000  # ~60 MB at most for the repeat check
MAX_REPORTED = 20  # rejections kept in the report; the rest are counted (and passed on)
_KEPT_OUT = (SubscriberState.UNSUBSCRIBED, SubscriberState.BOUNCED)

OnReject = Callable[[int, str], None]
# Called inside each batch's transaction with the subscribers it added as active or pending:
# what it writes (the confirmation emails it queues) is committed together with them.
OnAdded = Callable[[Connection, list[Subscriber]], None]


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
    stopped: bool = False  # stopped early (Ctrl-C): the rest of the file was not read


@dataclass(frozen=True)
class _Row:
    line: int
    record: rows.SubscriberRecord


class _Import:
    """One import run: reads rows, stores them in batches, streams the rejections."""

    def __init__(
        self,
        store: Store,
        report: ImportReport,
        *,
        double_opt_in: bool,
        suppressions: SuppressionList | None,
        on_reject: OnReject | None,
        on_added: OnAdded | None,
    ) -> None:
        self.store = store
        self.report = report
        self.double_opt_in = double_opt_in
        self.suppressions = suppressions
        self.on_reject = on_reject
        self.on_added = on_added
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
        if self.batch:
            self._store(self.batch, now)
        self.batch = []
        report = self.report
        for line, reason in sorted(self.rejections):
            report.rejected_count += 1
            if len(report.rejected) < MAX_REPORTED:
                report.rejected.append((line, reason))
            if self.on_reject is not None:
                self.on_reject(line, reason)
        self.rejections = []

    def _store(self, batch: list[_Row], now: datetime) -> None:
        by_email: dict[str, _Row] = {}
        for r in batch:  # repeats past the tracked addresses, within this batch
            if r.record.email in by_email:
                first = by_email[r.record.email].line
                self.reject(r.line, f"{r.record.email} repeats line {first}")
            else:
                by_email[r.record.email] = r
        with self.store.atomic() as conn:
            emails = list(by_email)
            known = rows.states_of(conn, emails)
            suppressed = self.suppressions.find_many(conn, emails) if self.suppressions else {}
            fresh = []
            for email, r in by_email.items():
                state = known.get(email)
                refusal = import_refusal(
                    email,
                    state=SubscriberState(state) if state else None,
                    suppressed=suppressed.get(email),
                    double_opt_in=self.double_opt_in,
                )
                if refusal is None:
                    fresh.append(r.record)
                else:
                    self.reject(r.line, refusal)
            fresh = self._free_link_ids(conn, fresh)
            rows.insert_records(conn, fresh, now=now)
            kept_out = sum(1 for r in fresh if r.state in _KEPT_OUT)
            self.report.kept_out += kept_out
            self.report.imported += len(fresh) - kept_out
            if self.on_added is not None:
                added = [r.email for r in fresh if r.state not in _KEPT_OUT]
                self.on_added(conn, rows.get_many_by_email(conn, added))

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


def import_csv(
    store: Store,
    path: Path,
    *,
    now: datetime,
    double_opt_in: bool = False,
    suppressions: SuppressionList | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_added: OnAdded | None = None,
    on_reject: OnReject | None = None,
    stop: threading.Event | None = None,
) -> ImportReport:
    """Stream a CSV (``email,name`` plus any columns kept as attributes) into the list.

    Invalid rows are reported with their line and reason; the rest are imported. Addresses
    already on the list (any state, any case) are not added again: an unsubscribed address
    stays unsubscribed; nor are addresses on the ``suppressions`` list (None: no list, as in
    a benchmark's fresh database). New addresses are active, or pending with
    ``double_opt_in``; an export keeps its own states and dates (and refuses
    ``double_opt_in``). ``on_added`` is called in each batch's transaction with the
    subscribers it added as active or pending, ``on_progress`` with the lines read,
    ``on_reject`` with every rejected row. ``stop`` ends the import after the batch being
    stored (``stopped``); what was stored stays.

    A repeated address is reported with the line it repeats for the first
    ``MAX_TRACKED_ADDRESSES`` addresses; beyond that the database catches repeats.
    """
    report = ImportReport()
    state = SubscriberState.PENDING if double_opt_in else SubscriberState.ACTIVE
    run = _Import(
        store,
        report,
        double_opt_in=double_opt_in,
        suppressions=suppressions,
        on_reject=on_reject,
        on_added=on_added,
    )
    try:
        with path.open("rb") as handle:
            source = SubscriberCsv(handle, str(path), state=state, now=now)
            report.from_export, report.notes = source.is_export, source.notes
            if source.is_export and double_opt_in:
                raise UsageError(
                    f"{path} is an export of a subscriber list: import it without "
                    "--double-opt-in (its states are kept: pending stays pending)"
                )
            flushed_at = 0
            for parsed in source.rows():
                if parsed.record is None:
                    run.reject(parsed.line, parsed.reason)
                else:
                    run.add(_Row(parsed.line, parsed.record))
                report.lines = source.lines_read
                if report.lines - flushed_at >= IMPORT_BATCH:  # rows and rejections bounded
                    run.flush(now)
                    flushed_at = report.lines
                    if on_progress:
                        on_progress(report.lines)
                    if stop is not None and stop.is_set():
                        report.stopped = True
                        break
            report.lines = source.lines_read
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
