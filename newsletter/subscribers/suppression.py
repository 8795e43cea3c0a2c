"""The suppression list: addresses no import or ``add`` may make active again.

An address that bounced, complained (a spam report) or asked to be forgotten is kept as a
keyed hash, never as the address: HMAC-SHA256 of the normalized address, with a key derived
from the web secret. A copy of the database therefore does not reveal who was on it, while
the list still recognizes the address when an import brings it back. New entries use the
current secret; lookups also try the previous ones (and the built-in default, which the demo
and local tests run with), so rotating the secret keeps the list working as long as the old
secret stays in ``[web] previous_secrets``. Only the person's own confirmation of a new
sign-up (double opt-in) lifts an entry.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from newsletter.store import suppressions as rows

_KEY_PURPOSE = b"newsletter suppression list v1"


class Reason(enum.StrEnum):
    """Why an address is suppressed, weakest first: a stronger reason is never replaced."""

    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FORGOTTEN = "forgotten"

    @property
    def strength(self) -> int:
        return list(Reason).index(self)


@dataclass(frozen=True)
class Suppressed:
    """One entry of the list: why and since when."""

    reason: Reason
    since: datetime

    def describe(self) -> str:
        """``suppressed: complained on 2026-11-26``, as import reports and errors say it."""
        return f"suppressed: {self.reason.value} on {self.since:%Y-%m-%d}"


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _KEY_PURPOSE, hashlib.sha256).digest()


class SuppressionList:
    """Looks addresses up in, adds them to and lifts them from the suppression table.

    ``secret`` makes new entries; ``previous`` secrets are tried on lookups too. Addresses
    are given in their normalized form (:func:`newsletter.subscribers.addresses.normalize_address`).
    """

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        keys = [_key(secret)]
        for other in previous:
            if _key(other) not in keys:
                keys.append(_key(other))
        self._keys = keys

    def address_hash(self, address: str) -> str:
        """The hash a new entry for ``address`` is stored under (the current secret's)."""
        return self._hashes(address)[0]

    def _hashes(self, address: str) -> list[str]:
        data = address.encode("utf-8", "surrogatepass")
        return [hmac.new(key, data, hashlib.sha256).hexdigest() for key in self._keys]

    def find(self, conn: Connection, address: str) -> Suppressed | None:
        """The entry for ``address`` (under any known secret), or None."""
        return self.find_many(conn, [address]).get(address)

    def find_many(self, conn: Connection, addresses: Sequence[str]) -> dict[str, Suppressed]:
        """The entries of those of ``addresses`` on the list (the strongest if several)."""
        by_hash: dict[str, str] = {}
        for address in addresses:
            for value in self._hashes(address):
                by_hash[value] = address
        found: dict[str, Suppressed] = {}
        for value, (reason, since) in rows.get_many(conn, list(by_hash)).items():
            entry = Suppressed(Reason(reason), since)
            address = by_hash[value]
            known = found.get(address)
            if known is None or entry.reason.strength > known.reason.strength:
                found[address] = entry
        return found

    def add(self, conn: Connection, address: str, reason: Reason, *, now: datetime) -> None:
        """Put ``address`` on the list; an entry with a stronger reason stays as it is."""
        known = self.find(conn, address)
        if known is not None and known.reason.strength > reason.strength:
            return
        rows.put(conn, self.address_hash(address), reason.value, now=now)

    def lift(self, conn: Connection, address: str) -> bool:
        """Take ``address`` off the list (its own confirmation); True if it was on it."""
        return rows.delete_many(conn, self._hashes(address)) > 0
