"""The ``newsletter`` command: a thin click layer over :mod:`newsletter.app`."""

from __future__ import annotations

import sys

import click

from newsletter import __version__
from newsletter.cli.base import CliState, run_guarded
from newsletter.cli.db import db
from newsletter.cli.schedule import run, show_schedule
from newsletter.cli.send import demo, inbox, preview, resend, send_now, status
from newsletter.cli.serve import serve
from newsletter.cli.sources import sources
from newsletter.cli.subscribers import subscribers


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="newsletter")
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="NEWSLETTER_CONFIG",
    help="Config file (TOML). Default: $NEWSLETTER_CONFIG, else built-in defaults.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug details.")
@click.option("--quiet", "-q", is_flag=True, help="Log only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, quiet: bool) -> None:
    """Turn new articles into a daily email digest and deliver it to subscribers.

    Articles come from a folder (seeds/ by default) and RSS/Atom feeds; each digest carries
    only articles no earlier digest carried. Settings come from a TOML file (see
    config.example.toml) and NEWSLETTER_<SECTION>__<KEY> environment variables.
    """
    level = "DEBUG" if verbose else "WARNING" if quiet else None
    ctx.obj = CliState(config_path, log_level=level)
    ctx.call_on_close(ctx.obj.close)


for command in (demo, send_now, resend, preview, status, inbox, subscribers, sources, run):
    cli.add_command(command)
cli.add_command(show_schedule)
cli.add_command(serve)
cli.add_command(db)


def main() -> None:
    """Console-script entry point: one line and an exit code for every user error."""
    sys.exit(run_guarded(cli))
