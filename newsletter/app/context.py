"""What every use case needs: settings, the store and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from newsletter.config import Settings
from newsletter.signing import Signer
from newsletter.store import Store

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """Settings, an open store and the clock, passed to every use case."""

    settings: Settings
    store: Store
    clock: Clock = utc_now
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        self.signer = Signer(self.settings.web.secret.get_secret_value())

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock = utc_now) -> Context:
        return cls(settings, Store.open(settings.store.url, now=clock()), clock)

    def unsubscribe_url(self, subscriber_id: int) -> str:
        """The signed per-recipient unsubscribe link (GET shows a page; POST is one-click)."""
        token = self.signer.make("unsubscribe", subscriber_id, now=self.clock())
        return f"{self.settings.web.base_url}/unsubscribe/{token}"

    def close(self) -> None:
        self.store.close()
