"""What a delivery pass tells its caller: progress while it runs, a report when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    """Where the engine reports progress (a rich bar in a terminal, log lines otherwise)."""

    def start(self, total: int, done: int) -> None: ...
    def advance(self, sent: int, failed: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    """Progress reported nowhere."""

    def start(self, total: int, done: int) -> None:
        pass

    def advance(self, sent: int, failed: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class SendReport:
    """What one engine pass did, and what the digest's outbox looks like afterwards."""

    digest_id: int
    sent: int = 0
    failed: int = 0
    retried: int = 0
    released_in_flight: int = 0  # rows a sender that stopped left in ``sending`` (possible
    # duplicates): at the start, or taken over later from a sender that died or stalled
    interrupted: bool = False
    paused_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    digest_failed: bool = False  # finished and nobody received it (set by the caller)

    @property
    def finished(self) -> bool:
        return not self.counts.get("pending") and not self.counts.get("sending")
