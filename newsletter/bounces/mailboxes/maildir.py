"""A Maildir bounce mailbox on disk: new messages are the files in ``new/``.

``done`` renames ``new/NAME`` to ``cur/NAME:2,S`` (seen), an atomic step taken only after the
caller recorded the result; a message whose processing was interrupted is still in ``new/``
and is offered again on the next run. Messages in ``cur/`` count as processed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from newsletter.bounces.mailboxes.base import ClosesOnExit, MailboxMessage, first_message_id
from newsletter.errors import MailboxError

log = logging.getLogger(__name__)


class MaildirReader(ClosesOnExit):
    """Reads one Maildir folder (the directory holding ``new/``, ``cur/`` and ``tmp/``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        missing = [sub for sub in ("new", "cur", "tmp") if not (path / sub).is_dir()]
        if missing:
            raise MailboxError(
                f"[bounces] mailbox: {path} is not a Maildir (no {', '.join(missing)} folder); "
                "point it at the folder your mail server delivers bounces to"
            )
        self._names: dict[str, str] = {}  # key -> file name in new/, for messages offered

    def new_messages(self) -> Iterator[MailboxMessage]:
        """The messages in ``new/``, in file-name order (names start with the arrival time)."""
        try:
            names = sorted(os.listdir(self.path / "new"))
        except OSError as exc:
            raise MailboxError(f"cannot list {self.path / 'new'}: {exc.strerror}") from exc
        for name in names:
            if name.startswith("."):
                continue
            try:
                raw = (self.path / "new" / name).read_bytes()
            except FileNotFoundError:  # taken by another reader since the listing
                continue
            except OSError as exc:
                raise MailboxError(
                    f"cannot read {self.path / 'new' / name}: {exc.strerror}"
                ) from exc
            key = f"maildir:{_unique_part(name)}"
            self._names[key] = name
            yield MailboxMessage(key, first_message_id(raw), raw)

    def done(self, message: MailboxMessage) -> None:
        """Move the message to ``cur/`` with the seen flag; nothing if it is already there."""
        name = self._names.get(message.key)
        if name is None:
            raise ValueError(f"{message.key} was not offered by this reader")
        target = self.path / "cur" / _with_seen_flag(name)
        try:
            os.rename(self.path / "new" / name, target)
        except FileNotFoundError:
            if not target.exists():
                log.warning(
                    "bounce message %s vanished from %s before it was marked", name, self.path
                )
        except OSError as exc:
            raise MailboxError(
                f"cannot move {name} to {self.path / 'cur'}: {exc.strerror}"
            ) from exc

    def close(self) -> None:
        """Nothing to release; for symmetry with the IMAP reader."""
        self._names.clear()


def _unique_part(name: str) -> str:
    """The Maildir unique name, without the ``:2,FLAGS`` info some delivery agents add."""
    return name.split(":", 1)[0]


def _with_seen_flag(name: str) -> str:
    unique, colon, info = name.partition(":")
    flags = info.removeprefix("2,") if colon and info.startswith("2,") else ""
    return f"{unique}:2,{''.join(sorted(set(flags) | {'S'}))}"
