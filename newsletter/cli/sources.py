"""``newsletter sources check``: is every article source readable, and what is new."""

from __future__ import annotations

import click

from newsletter.app.sources import check_sources
from newsletter.cli.base import CliState, pass_state


@click.group()
def sources() -> None:
    """Inspect the article sources: the articles folder and the configured feeds."""


@sources.command()
@pass_state
def check(state: CliState) -> None:
    """Fetch every source now and report, per source, entries, new ones and any problem.

    Nothing is stored. Exits with 1 when any source has a problem.
    """
    results = check_sources(state.context())
    for result in results:
        if result.not_modified:
            click.echo(f"{result.name}: not modified since the last fetch")
        else:
            click.echo(f"{result.name}: {result.entries} entries, {result.new} new")
        for problem in result.problems:
            click.echo(f"  problem: {problem}")
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)
