"""Commands for the scheduled digest: run (the long-running process) and schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, pass_state, stop_on_signals

if TYPE_CHECKING:
    from newsletter.app import Context
    from newsletter.schedule import Schedule


@click.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the next run times and what a start would do now; send nothing.",
)
@pass_state
def run(state: CliState, dry_run: bool) -> None:
    """Send the digest on the [schedule] cron until stopped (SIGTERM or Ctrl-C).

    On start, a slot missed within [schedule] grace_minutes is sent at once (older misses are
    coalesced into it); unfinished digests are resumed before each new one. Several processes
    may run on one database: each slot is claimed there, so it is sent once.
    """
    from newsletter.schedule import Schedule, run_until_stopped

    schedule = Schedule.from_settings(state.settings.schedule)
    ctx = state.context()
    if dry_run:
        _show(ctx, schedule, count=5)
        return
    with stop_on_signals() as stop:
        run_until_stopped(ctx, schedule, stop=stop)


@click.command("schedule")
@click.option(
    "--count",
    "-n",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="How many upcoming run times to print.",
)
@pass_state
def show_schedule(state: CliState, count: int) -> None:
    """Print the next run times, the last slots run and what a start would do now."""
    from newsletter.schedule import Schedule

    schedule = Schedule.from_settings(state.settings.schedule)
    _show(state.context(), schedule, count=count)


def _show(ctx: Context, schedule: Schedule, *, count: int) -> None:
    from newsletter.app import slots
    from newsletter.schedule import slot_key

    now = ctx.clock()
    click.echo(
        f"cron {schedule.cron!r} in {schedule.zone}, "
        f"grace period {int(schedule.grace.total_seconds() // 60)} min"
    )
    click.echo("next runs:")
    for fire_time in schedule.next_fires(now, count):
        click.echo(f"  {fire_time:%a %Y-%m-%d %H:%M:%S %Z}  (slot {slot_key(fire_time)})")
    last_done = slots.last_done_slot(ctx)
    recent = slots.recent_slots(ctx, limit=3)
    if recent:
        click.echo("last slots:")
        for row in recent:
            status = "done" if row.done else "open"
            click.echo(f"  {row.slot}  {status}: {row.outcome or 'running'}")
    decision = schedule.due(now, last_done)
    verdict = "run it now" if decision.fire_time else "nothing to catch up"
    click.echo(f"on start now: {verdict} ({decision.reason})")
