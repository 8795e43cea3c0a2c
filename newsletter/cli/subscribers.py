"""``newsletter subscribers``: add, remove, list, import and export the list; show and forget
one person."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, pass_state, stop_on_signals
from newsletter.errors import UsageError
from newsletter.models import SubscriberState

if TYPE_CHECKING:
    from newsletter.app.subscriptions import ConfirmationReport, ImportReport, OnReject


@click.group()
def subscribers() -> None:
    """Manage the subscriber list (states: pending, active, unsubscribed, bounced).

    Only active subscribers get digests. An unsubscribed address is never added back by an
    import; it can only come back through a confirmation email (double opt-in). Addresses
    that bounced, complained or were forgotten are suppressed: no add or import takes them.
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

    result = subscriptions.add(state.context(), email, name, double_opt_in=double_opt_in)
    added, mailed = result.subscriber, result.confirmation
    sent = ""
    if mailed is not None:
        sent = (
            "; confirmation email sent"
            if mailed.sent
            else "; confirmation email queued (it goes out with `newsletter serve` or the next "
            "send-now)"
        )
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
    """Print every subscriber: email, state, name (tab-separated), and why, when the state
    has a reason: the server's reply for a bounced address, "complaint" for an address
    unsubscribed by a spam report.

    Control and format characters (escape sequences, bidi overrides) are shown escaped, as
    in \\x1b, never sent to the terminal.
    """
    from newsletter.app import subscriber_list

    count = 0
    wanted = SubscriberState(only) if only else None
    shown = subscriber_list.shown
    for email, name, sub_state, reason in subscriber_list.subscribers(
        state.context(), state=wanted
    ):
        why = f"\t{shown(reason)}" if reason else ""
        click.echo(f"{shown(email)}\t{sub_state}\t{shown(name)}{why}")
        count += 1
    click.echo(f"{count} subscribers", err=True)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Import as pending and email each a confirmation link.",
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
    already sent keep working. Suppressed addresses (bounced, complained, forgotten) are
    refused. An Excel first line 'sep=;' is honoured. Ctrl-C stops after the rows being
    stored; the confirmation emails already queued go out with the next send or a re-run.
    """
    from newsletter.app import subscriptions

    ctx = state.context()
    with (
        _rejection_sink(report_file) as on_reject,
        import_progress(csv_file) as progress,
        stop_on_signals() as stop,
    ):
        report, mailed = subscriptions.import_subscribers(
            ctx,
            csv_file,
            double_opt_in=double_opt_in,
            on_progress=progress,
            on_reject=on_reject,
            stop=stop,
        )
    for note in report.notes:
        click.echo(f"warning: {csv_file}: {note}", err=True)
    _print_import(csv_file, report, report_file)
    if mailed is not None:
        _print_confirmations(mailed)
    code = stop.exit_code()
    if code is not None:
        click.get_current_context().exit(code)


def _print_import(csv_file: Path, report: ImportReport, report_file: Path | None) -> None:
    from newsletter.app.subscriber_list import shown as printable

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
    stopped = " (stopped early: run the same import again for the rest)" if report.stopped else ""
    click.echo(
        f"imported {report.imported} subscribers{kept}{stopped}, "
        f"rejected {report.rejected_count} rows" + listed + export
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
    more = mailed.failed_count - len(mailed.failed)
    if more:
        click.echo(f"warning: ... and {more} more confirmation emails refused", err=True)
    if mailed.waiting:
        click.echo(
            f"warning: {mailed.waiting} confirmation emails are queued, not sent yet; they go "
            "out with `newsletter serve` or the next send-now (nobody gets one twice)",
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


@subscribers.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
@pass_state
def show(state: CliState, email: str, as_json: bool) -> None:
    """Print everything stored about EMAIL: the subscriber row and attributes, every
    delivery to them, bounce reports about them, queued sign-up requests and whether the
    address is suppressed.

    For a request to see one's data (GDPR art. 15).
    """
    from newsletter.app import subscriber_list

    found = subscriber_list.show(state.context(), email)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    shown = subscriber_list.shown
    subscriber = found["subscriber"]
    if subscriber is None:
        click.echo(f"{shown(found['email'])} is not on the list")
    else:
        for key, value in subscriber.items():
            click.echo(f"{key}: {shown(str(value)) if value is not None else ''}")
    for delivery in found["deliveries"]:
        error = f": {shown(delivery['last_error'])}" if delivery["last_error"] else ""
        click.echo(
            f"delivery: {delivery['kind']} {delivery['mailing']} {delivery['state']}"
            f" {delivery['sent_at'] or delivery['updated_at']}{error}"
        )
    for report in found["bounce_reports"]:
        said = f": {shown(report['diagnostic'])}" if report["diagnostic"] else ""
        click.echo(
            f"bounce report: {report['outcome']} for mailing {report['mailing']}"
            f" {report['processed_at']} (by {report['matched_by']}){said}"
        )
    for request in found["signup_requests"]:
        click.echo(f"sign-up request: {request['requested_at']} name {shown(request['name'])!r}")
    if found["suppressed"]:
        entry = found["suppressed"]
        click.echo(f"suppressed: {entry['reason']} since {entry['since']}")


@subscribers.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def forget(state: CliState, email: str, yes: bool) -> None:
    """Delete everything stored about EMAIL (GDPR art. 17): the subscriber row, attributes,
    delivery rows, bounce reports and sign-up requests.

    Only a keyed hash of the address is kept, on the suppression list, so that no import or
    add brings it back; the person can come back by signing up and confirming themselves.
    """
    from newsletter.app import subscriber_list

    if not yes:
        click.confirm(f"Delete everything stored about {email}?", abort=True)
    gone = subscriber_list.forget_person(state.context(), email)
    if not gone.was_listed:
        click.echo(
            f"{gone.address} was not on the list; it is now suppressed, so no import adds it"
        )
        return
    click.echo(
        f"forgot {gone.address}: deleted the subscriber, {gone.deliveries} delivery rows and "
        f"{gone.requests} sign-up requests; kept a keyed hash so no import adds it back"
    )
