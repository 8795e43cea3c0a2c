"""Shared CLI plumbing: loading settings once, signals, turning errors into one line."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from newsletter.app import Context
from newsletter.config import Settings, load_settings
from newsletter.errors import NewsletterError
from newsletter.logs import configure_logging


class CliState:
    """Per-invocation state: the config path and, once needed, settings and the store."""

    def __init__(self, config_path: str | None, *, log_level: str | None = None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self._settings: Settings | None = None
        self._context: Context | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            configure_logging(self.log_level or self._settings.logging.level)
        return self._settings

    def context(self) -> Context:
        if self._context is None:
            self._context = Context.open(self.settings)
        return self._context

    def close(self) -> None:
        if self._context is not None:
            self._context.close()


pass_state = click.make_pass_decorator(CliState)


class StopSignal(threading.Event):
    """Set by SIGINT or SIGTERM; ``signum`` says which came first."""

    signum: int | None = None

    def exit_code(self) -> int | None:
        """128 + the signal number, as shells report a process a signal stopped (130 for
        Ctrl-C, 143 for SIGTERM); None when no signal came."""
        return 128 + self.signum if self.signum is not None else None


@contextmanager
def stop_on_signals() -> Iterator[StopSignal]:
    """SIGINT/SIGTERM set the event (finish in-flight messages, then stop); a second one aborts."""
    stop = StopSignal()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo(
            f"\n{signal.Signals(signum).name}: stopping after the messages in flight "
            "(the send resumes with the next run)",
            err=True,
        )
        stop.signum = signum
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_guarded(command: click.Group, args: list[str] | None = None) -> int:
    """Run the click group; a ``NewsletterError`` becomes ``error: <message>`` and its exit code."""
    try:
        result = command.main(args=args, standalone_mode=False)
    except NewsletterError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    return result if isinstance(result, int) else 0


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
