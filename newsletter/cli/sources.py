"""``newsletter sources check|list``: is every source readable, what is new, and why."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import click

from newsletter.cli.base import CliState, pass_state

if TYPE_CHECKING:
    from newsletter.app.explain import ArticleFate


@click.group()
def sources() -> None:
    """Inspect the article sources: the articles folder and the configured feeds."""


@sources.command()
@pass_state
def check(state: CliState) -> None:
    """Fetch every source now and report, per source, entries, new ones and any problem.

    Nothing is stored. Exits with 1 when any source has a problem.
    """
    from newsletter.app.sources import check_sources

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


@sources.command("list")
@click.option(
    "--explain",
    is_flag=True,
    help="Say what becomes of each article: next digest, already sent, too old, skipped, ...",
)
@pass_state
def list_(state: CliState, explain: bool) -> None:
    """List every article the sources hold now, newest first, and every file skipped.

    With --explain, each article's fate in the next digest, as send-now would decide it
    (rendering the digest, storing and sending nothing). Use it when an article did not go
    out.
    """
    from newsletter.app.explain import Fate, explain_next_digest
    from newsletter.app.sources import list_articles

    ctx = state.context()
    if not explain:
        listing = list_articles(ctx)
        for article in listing.articles:
            click.echo(f"{article.published:%Y-%m-%d}  {article.title}  ({article.origin})")
        for problem in listing.problems:
            click.echo(f"skipped: {problem}")
        click.echo(
            f"{_plural(len(listing.articles), 'article')} found, "
            f"{_plural(len(listing.problems), 'file or entry', 'files or entries')} skipped"
        )
        return
    fates = explain_next_digest(ctx)
    for fate in fates:
        click.echo(_fate_line(fate))
    counts = Counter(f.fate for f in fates)
    click.echo("; ".join(f"{f.value}: {counts[f]}" for f in Fate if counts[f]) or "nothing found")


def _fate_line(fate: ArticleFate) -> str:
    if fate.article is None:
        return fate.reason
    article = fate.article
    return (
        f"{fate.reason}: {article.published:%Y-%m-%d} \u201c{article.title}\u201d "
        f"({article.origin})"
    )


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"
