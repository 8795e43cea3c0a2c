"""Which delivery a bounce report names: by VERP token, else Message-ID, else recipient.

What is trusted, strongest first:

1. A VERP address we made (:mod:`.verp`): its MAC proves which mailing and which subscriber
   it names; nobody without the key can make one.
2. The Message-ID of the enclosed original, when it is exactly the one a delivery was sent
   with. Its tag is a MAC of the delivery (see ``newsletter.message``), so a recipient
   cannot derive another delivery's Message-ID from their own.
3. A failed recipient (``Final-Recipient``, ``Original-Recipient``, the ARF's
   ``Original-Rcpt-To`` or the enclosed ``To``): anyone who can mail the bounce address can
   write any address there, so it counts only for an address that was sent a mailing in the
   last ``RECIPIENT_WINDOW`` (that mailing is the one in question), and only when the report
   carries nothing we could check: a token that fails its check, or an enclosed Message-ID
   that is none of our deliveries' (backscatter from mail someone else sent in our name),
   means the report is not about our mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from newsletter.bounces.classify import Classification
from newsletter.bounces.verp import read_verp, split_bounce_address, verp_key
from newsletter.store import bounce_reports as rows
from newsletter.store.bounce_reports import DeliveryRef

RECIPIENT_WINDOW = timedelta(days=7)  # a delayed message bounces within 5 days (Postfix)
# The Message-ID a delivery is sent with: <digest id>.<delivery id>.<tag>@<domain>.
_OUR_MESSAGE_ID = re.compile(r"<([0-9]{1,15})\.([0-9]{1,15})\.[0-9a-f]{1,64}@[^<>@\s]+>")


@dataclass(frozen=True)
class Match:
    """The delivery a report names, and which clue named it."""

    delivery: DeliveryRef
    by: str  # verp, message-id or recipient


@dataclass(frozen=True)
class VerpKeys:
    """What reads our VERP addresses: the bounce address and the keys of the web secrets."""

    bounce_address: str
    key: bytes
    previous_keys: tuple[bytes, ...] = ()

    @classmethod
    def for_secrets(
        cls, bounce_address: str, secret: str, previous: Sequence[str] = ()
    ) -> VerpKeys:
        """The keys for the current web secret and the previous ones (rotation)."""
        return cls(bounce_address, verp_key(secret), tuple(verp_key(p) for p in previous))

    def read(self, address: str) -> tuple[int, str] | None:
        """``(digest id, public id)`` of a VERP address we made, else None."""
        return read_verp(
            address, self.bounce_address, key=self.key, previous_keys=self.previous_keys
        )

    def looks_like_ours(self, address: str) -> bool:
        """``bounces+anything@our.domain``: what a token of ours would be sent to."""
        local, domain = split_bounce_address(self.bounce_address)
        prefix, _, rest = address.rpartition("@")[0].partition("+")
        return (
            bool(rest)
            and prefix.lower() == local.lower()
            and (address.rpartition("@")[2].lower() == domain.lower())
        )


def find_delivery(
    conn: Connection,
    found: Classification,
    *,
    verp: VerpKeys | None,
    normalize: Callable[[str], str | None],
    now: datetime,
) -> Match | None:
    """The delivery ``found`` refers to, by the strongest clue it carries; None if none.

    ``normalize`` gives an address in the stored form (None for one that is not valid).
    """
    tampered = False
    for address in found.verp_candidates if verp is not None else ():
        assert verp is not None
        decoded = verp.read(address)
        if decoded is not None:
            delivery = rows.delivery_to_public_id(conn, *decoded)
            if delivery is not None:
                return Match(delivery, "verp")
        tampered = tampered or verp.looks_like_ours(address)
    for message_id in found.message_ids:
        ours = _OUR_MESSAGE_ID.fullmatch(message_id)
        if ours is not None:
            digest_id, delivery_id = int(ours.group(1)), int(ours.group(2))
            delivery = rows.delivery_with_message_id(conn, digest_id, delivery_id, message_id)
            if delivery is not None:
                return Match(delivery, "message-id")
    if tampered or found.message_ids:
        return None
    for address in found.recipients:
        email = normalize(address)
        if email is None:
            continue
        delivery = rows.last_sent_to(conn, email, since=now - RECIPIENT_WINDOW)
        if delivery is not None:
            return Match(delivery, "recipient")
    return None
