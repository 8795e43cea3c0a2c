"""What every bounce-mailbox reader gives: messages with a stable key, and ``done``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from newsletter.bounces.reports import message_ids, parse_headers


@dataclass(frozen=True)
class MailboxMessage:
    """One unprocessed message. ``key`` stays the same for the same message on every run
    (``maildir:<unique name>``, ``imap:<folder>:<uidvalidity>:<uid>``), so recording a result
    under it can be made idempotent."""

    key: str
    message_id: str | None
    raw: bytes = field(repr=False)


class MailboxReader(Protocol):
    """Offers each new message until ``done`` is called for it, across runs and crashes."""

    def new_messages(self) -> Iterator[MailboxMessage]:
        """The messages not yet marked done, oldest first."""
        ...

    def done(self, message: MailboxMessage) -> None:
        """Mark ``message`` processed; call only after its result is committed. Idempotent."""
        ...

    def close(self) -> None:
        """Release the folder or connection."""
        ...

    def __enter__(self) -> MailboxReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosesOnExit:
    """``with reader:`` calls ``reader.close()`` on the way out."""

    def close(self) -> None:
        """Release what the reader holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def first_message_id(raw: bytes) -> str | None:
    """The ``Message-ID`` of a raw message, if it has a usable one."""
    found = message_ids(parse_headers(raw))
    return found[0] if found else None
