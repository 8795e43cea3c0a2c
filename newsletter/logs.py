"""The one place logging is configured, and progress reporting for long sends."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("newsletter")


def configure_logging(level: str = "INFO", *, stream: object = None) -> None:
    """Rich output on a terminal, plain timestamped lines otherwise (files, journald, CI)."""
    target = stream or sys.stderr
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if getattr(target, "isatty", lambda: False)():
        handler = RichHandler(console=Console(file=target), show_path=False, markup=False)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(target)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("newsletter").setLevel(level)
    # The SMTP server library and the scheduler are chatty at INFO. (cssutils is silenced
    # once by the render stage, which owns premailer.)
    for noisy in ("mail.log", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # flufl.bounce logs each detector it runs at INFO and a traceback for each detector that
    # crashes on odd input; the bounce classifier handles both, so they stay out of the log.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


class BarProgress:
    """A rich progress bar with sent / failed / rate / ETA, for a terminal."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("[bold]sending[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]:.0f} msg/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: TaskID | None = None
        self._sent = 0

    def start(self, total: int, done: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("send", total=total, completed=done, failed=0, rate=0.0)

    def advance(self, sent: int, failed: int) -> None:
        if self._task is None:
            return
        task = self._bar.tasks[0]
        self._bar.update(
            self._task,
            advance=sent + failed,
            failed=task.fields["failed"] + failed,
            rate=task.speed or 0.0,
        )

    def finish(self) -> None:
        self._bar.stop()


class LogProgress:
    """Plain progress lines every 10% (or 1,000 messages), for logs and pipes."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failed = 0
        self._next_report = 0

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self._step = max(1000, total // 10) if total else 1000
        self._next_report = done + self._step
        log.info("sending: %d of %d done", done, total)

    def advance(self, sent: int, failed: int) -> None:
        self.done += sent + failed
        self.failed += failed
        if self.done >= self._next_report:
            log.info("sending: %d of %d done, %d failed", self.done, self.total, self.failed)
            self._next_report = self.done + self._step

    def finish(self) -> None:
        pass


def progress_for(stream: object = None) -> BarProgress | LogProgress:
    target = stream or sys.stderr
    return BarProgress() if getattr(target, "isatty", lambda: False)() else LogProgress()
