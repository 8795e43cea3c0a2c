"""``newsletter subscribers``: add, remove, list, import and export the list."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, pass_state
from newsletter.errors import UsageError
from newsletter.models import SubscriberState

if TYPE_CHECKING:
    from newsletter.app.subscriptions import ConfirmationReport, ImportReport, OnReject


@click.group()
def subscribers() -> None:
    """Manage the subscriber list (states: pending, active, unsubscribed, bounced).

    Only active subscribers get digests. An unsubscribed address is never added back by an
    import; it can only come back through a confirmation email (double opt-in).
    """


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name, used in greetings.")
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Add as pending and email a confirmation link; active once they click it.",
)
@pass_state
def add(state: CliState, email: str, name: str, double_opt_in: bool) -> None:
    """Add EMAIL to the list (active: you vouch for their consent).

    A pending address becomes active. With --double-opt-in the address stays pending until
    its owner confirms; this is also how an unsubscribed or bounced address comes back, and
    how a lost confirmation email is sent again.
    """
    from newsletter.app import subscriptions

    added = subscriptions.add(state.context(), email, name, double_opt_in=double_opt_in)
    sent = "; confirmation email sent" if double_opt_in else ""
    click.echo(f"added {added.email} ({added.state.value}){sent}")


@subscribers.command()
@click.argument("email")
@pass_state
def remove(state: CliState, email: str) -> None:
    """Unsubscribe EMAIL. The address is kept as unsubscribed so no import adds it back."""
    from newsletter.app import subscriber_list

    address, changed = subscriber_list.remove(state.context(), email)
    if changed:
        click.echo(f"unsubscribed {address}")
    else:
        click.echo(f"{address} was already unsubscribed")


@subscribers.command("list")
@click.option(
    "--state",
    "only",
    type=click.Choice([s.value for s in SubscriberState]),
    help="Only the addresses in this state.",
)
@pass_state
def list_(state: CliState, only: str | None) -> None:
    """Print every subscriber: email, state, name (tab-separated).

    Control and format characters (escape sequences, bidi overrides) are shown escaped, as
    in \\x1b, never sent to the terminal.
    """
    from newsletter.app import subscriber_list
    from newsletter.subscriber_rules import printable

    count = 0
    wanted = SubscriberState(only) if only else None
    for email, name, sub_state in subscriber_list.subscribers(state.context(), state=wanted):
        click.echo(f"{printable(email)}\t{sub_state}\t{printable(name)}")
        count += 1
    click.echo(f"{count} subscribers", err=True)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Import as pending and email each a confirmation link (over one SMTP connection).",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the rejected rows (line,reason) to this CSV file instead of the terminal.",
)
@pass_state
def import_(state: CliState, csv_file: Path, double_opt_in: bool, report_file: Path | None) -> None:
    """Import CSV_FILE with columns email,name; other columns become attributes.

    Attributes are usable in templates as {{ subscriber.attrs.COLUMN }}. Invalid rows are
    reported with their line number and reason (the first 20 on the terminal, all with
    --report); the rest are imported. Addresses already on the list are not added twice
    (case does not matter). A file made by 'export' keeps its states, dates and link ids:
    pending stays pending, unsubscribed and bounced addresses stay out, and links in emails
    already sent keep working. An Excel first line 'sep=;' is honoured.
    """
    from newsletter.app import subscriptions

    ctx = state.context()
    with _rejection_sink(report_file) as on_reject, import_progress(csv_file) as progress:
        report, mailed = subscriptions.import_subscribers(
            ctx, csv_file, double_opt_in=double_opt_in, on_progress=progress, on_reject=on_reject
        )
    for note in report.notes:
        click.echo(f"warning: {csv_file}: {note}", err=True)
    _print_import(csv_file, report, report_file)
    if mailed is not None:
        _print_confirmations(mailed)


def _print_import(csv_file: Path, report: ImportReport, report_file: Path | None) -> None:
    from newsletter.subscriber_rules import printable

    if report_file is None:
        for line, reason in report.rejected:
            click.echo(f"{csv_file}:{line}: {printable(reason)}", err=True)
        more = report.rejected_count - len(report.rejected)
        if more:
            click.echo(
                f"{csv_file}: ... and {more} more rejected rows (list them all with --report)",
                err=True,
            )
    kept = f", {report.kept_out} kept as unsubscribed/bounced" if report.kept_out else ""
    listed = f" (listed in {report_file})" if report_file and report.rejected_count else ""
    export = "; an export: states and dates kept" if report.from_export else ""
    click.echo(
        f"imported {report.imported} subscribers{kept}, rejected {report.rejected_count} rows"
        + listed
        + export
    )
    if report.new_links:
        click.echo(
            f"warning: {report.new_links} rows had link ids already used in this database: "
            "they got new ones, so their links in emails sent before are refused",
            err=True,
        )


@contextmanager
def _rejection_sink(report_file: Path | None) -> Iterator[OnReject | None]:
    """With --report, every rejected row goes to that file as it is found (memory stays
    flat for any file); otherwise the report keeps the first few for the terminal."""
    if report_file is None:
        yield None
        return
    try:
        handle = report_file.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{report_file}: cannot write the report: {exc.strerror}") from exc
    with handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "reason"])

        def to_file(line: int, reason: str) -> None:
            writer.writerow([line, reason])

        yield to_file


def _print_confirmations(mailed: ConfirmationReport) -> None:
    click.echo(f"sent {mailed.sent} confirmation emails")
    for address, reason in mailed.failed:
        click.echo(f"warning: confirmation email to {address} refused: {reason}", err=True)
    if mailed.unsent:
        click.echo(
            f"warning: {mailed.unsent} confirmation emails were not sent ({mailed.stopped_by}); "
            "those addresses are pending: send again with 'subscribers add --double-opt-in'",
            err=True,
        )


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None  # the import itself reports the problem in one line


@contextmanager
def import_progress(path: Path) -> Iterator[Callable[[int], None] | None]:
    """A progress bar (rows read, of about how many) on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    total = _count_lines(path)
    bar = Progress(
        TextColumn("[bold]importing[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("import", total=max(total - 1, 1) if total else None)
    with bar:
        yield lambda lines: bar.update(task, completed=lines)


@subscribers.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write; default standard output.",
)
@pass_state
def export(state: CliState, output: Path | None) -> None:
    """Write the whole list as CSV: states, dates, link ids and attributes.

    The file imports back as it was, into this or a fresh database: states and dates are
    kept, and the links in emails already sent still name the same person.
    """
    from newsletter.app import subscriber_list

    ctx = state.context()
    if output is None:
        count = subscriber_list.export(ctx, sys.stdout)
    else:
        try:
            with output.open("w", newline="", encoding="utf-8") as handle:
                count = subscriber_list.export(ctx, handle)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}") from exc
    click.echo(f"exported {count} subscribers", err=True)
