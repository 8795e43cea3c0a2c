"""``newsletter subscribers``: add, remove, list, import and export the list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter import subscribers as subscriber_list
from newsletter.cli.base import CliState, pass_state
from newsletter.errors import UsageError


@click.group()
def subscribers() -> None:
    """Manage the subscriber list (states: pending, active, unsubscribed, bounced)."""


@subscribers.command()
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name, used in greetings.")
@click.option(
    "--double-opt-in", is_flag=True, help="Add as pending; they must confirm by email first."
)
@pass_state
def add(state: CliState, email: str, name: str, double_opt_in: bool) -> None:
    """Add EMAIL to the list (active: you vouch for their consent)."""
    ctx = state.context()
    added = subscriber_list.add_subscriber(
        ctx.store, email, name, now=ctx.clock(), double_opt_in=double_opt_in
    )
    click.echo(f"added {added.email} ({added.state.value})")


@subscribers.command()
@click.argument("email")
@pass_state
def remove(state: CliState, email: str) -> None:
    """Unsubscribe EMAIL. The address is kept as unsubscribed so no import adds it back."""
    ctx = state.context()
    subscriber_list.remove_subscriber(ctx.store, email, now=ctx.clock())
    click.echo(f"unsubscribed {email.strip().lower()}")


@subscribers.command("list")
@pass_state
def list_(state: CliState) -> None:
    """Print every subscriber: email, state, name."""
    count = 0
    for email, name, sub_state in subscriber_list.list_subscribers(state.context().store):
        click.echo(f"{email}\t{sub_state}\t{name}")
        count += 1
    click.echo(f"{count} subscribers", err=True)


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--double-opt-in", is_flag=True, help="Import as pending; each must confirm by email first."
)
@pass_state
def import_(state: CliState, csv_file: Path, double_opt_in: bool) -> None:
    """Import CSV_FILE with columns email,name (other columns become attributes).

    Invalid rows are reported with their line number and reason; the rest are imported.
    Addresses already on the list are not added twice (case does not matter).
    """
    ctx = state.context()
    report = subscriber_list.import_csv(
        ctx.store, csv_file, now=ctx.clock(), double_opt_in=double_opt_in
    )
    for line, reason in report.rejected:
        click.echo(f"{csv_file}:{line}: {reason}", err=True)
    click.echo(f"imported {report.imported} subscribers, rejected {len(report.rejected)} rows")


@subscribers.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write; default standard output.",
)
@pass_state
def export(state: CliState, output: Path | None) -> None:
    """Write the whole list as CSV, with state and dates."""
    store = state.context().store
    if output is None:
        count = subscriber_list.export_csv(store, sys.stdout)
    else:
        try:
            with output.open("w", newline="", encoding="utf-8") as handle:
                count = subscriber_list.export_csv(store, handle)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    click.echo(f"exported {count} subscribers", err=True)
