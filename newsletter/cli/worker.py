"""``newsletter worker``: a long-running process that delivers queued and unfinished digests."""

from __future__ import annotations

import click

from newsletter.cli.base import CliState, pass_state, stop_on_signals


@click.command()
@click.option(
    "--once",
    is_flag=True,
    help="Deliver what is pending (waiting for retries), then exit; paused digests resume.",
)
@pass_state
def worker(state: CliState, once: bool) -> None:
    """Deliver the digests that `send-now --queue` or `run` queued, until stopped.

    Any unfinished digest is delivered, whoever started it. Run one per machine, or several,
    against the same PostgreSQL database: they share each digest's deliveries and the [smtp]
    connections and max_per_second (README, "Scaling out"). On SQLite one sender delivers at a
    time; a worker waits for the send lock. SIGTERM or Ctrl-C stop it after the messages in
    flight (exit 0). Exit codes with --once: 0 done, 3 a digest paused after too many
    failures in a row.
    """
    from newsletter.app.worker import run_worker

    ctx = state.context()
    with stop_on_signals() as stop:
        run_worker(ctx, stop=stop, once=once)  # it logs a line per digest and a summary
