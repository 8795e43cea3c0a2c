"""Shared CLI plumbing: commands loaded on first use, settings loaded once, signals, and
errors turned into one line.

Only click, the standard library and the light ``errors`` and ``models`` are imported here
and at the top of every command module: ``newsletter --help`` lists every command without
loading what the commands use (SQLAlchemy, pydantic, premailer, Starlette, feedparser, ...).
Commands import those when they run.
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.app import Context
    from newsletter.config import Settings


class LazyGroup(click.Group):
    """A group whose commands are imported on first use: ``{"name": "module:attribute"}``."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


class CliState:
    """Per-invocation state: the config path and, once needed, settings and the store."""

    def __init__(self, config_path: str | None, *, log_level: str | None = None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self._settings: Settings | None = None
        self._context: Context | None = None

    @property
    def settings(self) -> Settings:
        """The settings, loaded (and logging configured) on first use."""
        if self._settings is None:
            from newsletter.config import load_settings
            from newsletter.logs import configure_logging

            self._settings = load_settings(self.config_path)
            configure_logging(self.log_level or self._settings.logging.level)
        return self._settings

    def context(self) -> Context:
        """The use cases' context (settings, open store, clock), opened on first use."""
        if self._context is None:
            from newsletter.app import Context

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
