"""What every use case needs: settings, the store, a clock and the link signers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from newsletter.config import DEFAULT_WEB_SECRET, Settings
from newsletter.errors import ConfigError
from newsletter.models import Clock
from newsletter.signing import Signer
from newsletter.store import Store
from newsletter.subscribers.suppression import SuppressionList

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The real clock: now, in UTC. Everything below the doors is given a clock instead."""
    return datetime.now(UTC)


@dataclass
class Context:
    """Settings, an open store and the clock, passed to every use case.

    ``signer`` signs new links with ``[web] secret`` and reads links signed with it or a
    previous secret. The public default secret is honoured among the previous secrets for
    unsubscribe links only (``unsubscribe_signer``): an operator who sent mail with it can
    keep those links working, but nobody can forge a confirmation with it.
    ``suppressions`` hashes addresses with a key from the same secrets (the default one
    included, for lookups: a list kept while running the demo setup still counts).
    """

    settings: Settings
    store: Store
    clock: Clock = utc_now
    signer: Signer = field(init=False)
    unsubscribe_signer: Signer = field(init=False)
    suppressions: SuppressionList = field(init=False)

    def __post_init__(self) -> None:
        web = self.settings.web
        secret = web.secret.get_secret_value()
        previous = [s.get_secret_value() for s in web.previous_secrets]
        self.unsubscribe_signer = Signer(secret, previous)
        self.signer = Signer(secret, [s for s in previous if s != DEFAULT_WEB_SECRET])
        self.suppressions = SuppressionList(secret, [*previous, DEFAULT_WEB_SECRET])

    @classmethod
    def open(cls, settings: Settings, *, clock: Clock = utc_now) -> Context:
        return cls(settings, Store.open(settings.store.url), clock)

    def unsubscribe_url(self, public_id: str) -> str:
        """The signed per-recipient unsubscribe link (GET shows a page; POST is one-click).

        It names the subscriber's public id, which export/import keeps, and never expires.
        Without a public id (an address not on the list, e.g. a test copy) there is nothing
        to unsubscribe from: the link is the web app's front page.
        """
        if not public_id:
            return f"{self.settings.web.base_url}/"
        token = self.signer.make("unsubscribe", public_id, now=self.clock())
        return f"{self.settings.web.base_url}/unsubscribe/{token}"

    def confirm_url(self, public_id: str) -> str:
        """The signed double opt-in link of one subscriber; it expires (``app.links``)."""
        token = self.signer.make("confirm", public_id, now=self.clock())
        return f"{self.settings.web.base_url}/confirm/{token}"

    def check_link_settings(self) -> None:
        """Refuse to put forgeable links in real mail; warn about plain-http links.

        ``ConfigError`` when the secret is the public default and ``base_url`` is not
        loopback (the demo and local tests are, so they run without a secret).
        """
        web = self.settings.web
        problem = web.forgeable_links_problem()
        if problem:
            raise ConfigError(problem)
        warning = web.plain_http_warning()
        if warning:
            log.warning("%s", warning)

    def close(self) -> None:
        self.store.close()
