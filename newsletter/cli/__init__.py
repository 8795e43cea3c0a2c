"""The ``newsletter`` command: a thin click layer over :mod:`newsletter.app`.

Each command's module is imported when that command runs (or its help is shown), and
imports what it uses inside the command, so ``newsletter --help`` starts at once.
"""

from __future__ import annotations

import sys

import click

import newsletter
from newsletter.cli.base import CliState, LazyGroup, run_guarded

COMMANDS = {
    "demo": "newsletter.cli.send:demo",
    "send-now": "newsletter.cli.send:send_now",
    "resend": "newsletter.cli.send:resend",
    "preview": "newsletter.cli.send:preview",
    "status": "newsletter.cli.send:status",
    "inbox": "newsletter.cli.send:inbox",
    "subscribers": "newsletter.cli.subscribers:subscribers",
    "bounces": "newsletter.cli.bounces:bounces",
    "sources": "newsletter.cli.sources:sources",
    "run": "newsletter.cli.schedule:run",
    "worker": "newsletter.cli.worker:worker",
    "schedule": "newsletter.cli.schedule:show_schedule",
    "serve": "newsletter.cli.serve:serve",
    "db": "newsletter.cli.db:db",
    "admin": "newsletter.cli.admin:admin",
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, _param, value: _print_version(ctx) if value else None,
    help="Show the version and exit.",
)
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


def _print_version(ctx: click.Context) -> None:
    # The version is read only when asked for: package metadata is slow to load.
    click.echo(f"newsletter, version {newsletter.__version__}")
    ctx.exit()


def main() -> None:
    """Console-script entry point: one line and an exit code for every user error."""
    sys.exit(run_guarded(cli))
