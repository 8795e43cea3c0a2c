"""``newsletter db``: the database's schema revision, and upgrading it."""

from __future__ import annotations

import click

from newsletter.cli.base import CliState, pass_state


@click.group()
def db() -> None:
    """The database's schema: which revision it is at, and bringing it to the latest.

    A new, empty database is made at the latest revision by any command. One that an older
    release wrote must be upgraded first (`newsletter db upgrade`); the other commands refuse
    it until then.
    """


@db.command()
@pass_state
def status(state: CliState) -> None:
    """Show the database's schema revision and the latest one this version knows."""
    from newsletter.app.database import UPGRADE_HINT, database_status, describe_revision

    where, found = database_status(state.settings)
    click.echo(f"database: {where}")
    click.echo(f"current revision: {describe_revision(found.current)}")
    click.echo(f"latest revision:  {describe_revision(found.latest)}")
    if found.empty:
        click.echo("empty: any command creates it at the latest revision")
    elif not found.known:
        click.echo("ahead: a newer release of newsletter wrote it; upgrade newsletter")
    elif found.up_to_date:
        click.echo("up to date")
    else:
        click.echo(f"behind: {UPGRADE_HINT}")


@db.command()
@pass_state
def upgrade(state: CliState) -> None:
    """Bring the database to the latest schema revision, keeping every row.

    A SQLite file is first copied beside itself, as FILE.REVISION-YYYYMMDDTHHMMSSZ.bak (the
    revision it was at and the time in UTC); for PostgreSQL take your own backup first. The
    upgrade is one transaction: if it fails, the database is left as it was.
    """
    from newsletter.app import database, utc_now

    where, result = database.upgrade(state.settings, now=utc_now())
    if result.previous is None:
        click.echo(f"created {where} at revision {database.describe_revision(result.current)}")
    elif not result.changed:
        click.echo(
            f"{where} is already at the latest revision, "
            f"{database.describe_revision(result.current)}"
        )
    else:
        click.echo(
            f"upgraded {where} from revision {result.previous} to "
            f"{database.describe_revision(result.current)}"
        )
    if result.backup is not None:
        click.echo(f"the database as it was is kept in {result.backup}")
