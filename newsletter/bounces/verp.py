"""VERP envelope senders: ``bounces+<token>@example.org`` names one delivery, unforgeably.

The token is ``<digest id>-<base32(subscriber key + MAC)>``, all lowercase ASCII so it
survives MTAs that lowercase addresses. The MAC (HMAC-SHA256 truncated to 64 bits, keyed by
:func:`verp_key`) covers the digest id and the subscriber key, so nobody can make a token that
points at another delivery. Decoding is strict: any change to the token gives no match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

MAX_LOCAL_PART_OCTETS = 64  # RFC 5321 section 4.5.3.1.1
_MAC_BYTES = 8
_MAX_DIGEST_ID = 10**15 - 1  # 15 decimal digits; a database id never gets near it
_TOKEN = re.compile(r"(0|[1-9][0-9]{0,14})-([a-z2-7]+)")


def verp_key(secret: str) -> bytes:
    """The VERP MAC key for a web secret (a different key from the links' one)."""
    return hashlib.sha256(b"newsletter-verp\0" + secret.encode()).digest()


def split_bounce_address(bounce_address: str) -> tuple[str, str]:
    """``(local part, domain)`` of a configured bounce address; ``ValueError`` if unusable."""
    local, at, domain = bounce_address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{bounce_address!r} is not an address like bounces@example.org")
    if "+" in local or not _is_plain_ascii(local) or not _is_plain_ascii(domain):
        raise ValueError(
            f"{bounce_address!r}: use a plain ASCII address without '+' (the token goes there)"
        )
    return local, domain


class VerpSigner:
    """Makes the VERP envelope senders of one mailing: the bounce address is split and the MAC
    keyed once, so each recipient costs one HMAC update and a base32 encoding.

    ``ValueError`` if the bounce address or the digest id cannot make a token.
    """

    def __init__(self, bounce_address: str, digest_id: int, *, key: bytes) -> None:
        local, domain = split_bounce_address(bounce_address)
        if not 0 <= digest_id <= _MAX_DIGEST_ID:
            raise ValueError(f"digest id {digest_id} is out of range for a VERP token")
        self.bounce_address = bounce_address
        self._prefix = f"{local}+{digest_id}-"
        self._domain = domain
        self._mac = hmac.new(key, _mac_prefix(digest_id), hashlib.sha256)

    def address(self, subscriber_key: str) -> str:
        """The envelope sender for this mailing's delivery to ``subscriber_key``.

        ``ValueError`` if the key is empty or the result would not fit an SMTP local part
        (64 octets).
        """
        if not subscriber_key:
            raise ValueError("the subscriber key of a VERP token must not be empty")
        subscriber = subscriber_key.encode("utf-8")
        mac = self._mac.copy()
        mac.update(subscriber)
        local = self._prefix + _b32(subscriber + mac.digest()[:_MAC_BYTES])
        if len(local) > MAX_LOCAL_PART_OCTETS:
            raise ValueError(
                f"the VERP local part for {self.bounce_address!r} would be {len(local)} octets "
                f"(max {MAX_LOCAL_PART_OCTETS}): use a shorter bounce address local part"
            )
        return f"{local}@{self._domain}"

    def sender(self, subscriber_key: str) -> str:
        """:meth:`address`, or the plain bounce address when no token can be made for this
        key (none, or too long: the Message-ID still identifies the delivery)."""
        try:
            return self.address(subscriber_key)
        except ValueError:
            return self.bounce_address


def verp_address(bounce_address: str, digest_id: int, subscriber_key: str, *, key: bytes) -> str:
    """The envelope sender for the delivery of digest ``digest_id`` to ``subscriber_key``.

    ``ValueError`` if the result would not fit an SMTP local part (64 octets).
    """
    return VerpSigner(bounce_address, digest_id, key=key).address(subscriber_key)


def read_verp(
    address: str,
    bounce_address: str,
    *,
    key: bytes,
    previous_keys: Sequence[bytes] = (),
) -> tuple[int, str] | None:
    """``(digest_id, subscriber_key)`` of a VERP address we made, else ``None``; never raises.

    The bounce address's local part and domain are compared without regard to ASCII case
    (MTAs may fold them); the token must be exact. ``previous_keys`` accept tokens made before
    a secret rotation.
    """
    try:
        local, domain = split_bounce_address(bounce_address)
    except ValueError:
        return None
    address_local, at, address_domain = address.rpartition("@")
    prefix, plus, token = address_local.partition("+")
    if not (at and plus and _is_plain_ascii(address)):
        return None
    if prefix.lower() != local.lower() or address_domain.lower() != domain.lower():
        return None
    parsed = _parse_token(token)
    if parsed is None:
        return None
    digest_id, subscriber, mac = parsed
    for candidate in (key, *previous_keys):
        if hmac.compare_digest(mac, _mac(candidate, digest_id, subscriber)):
            try:
                return digest_id, subscriber.decode("utf-8")
            except UnicodeDecodeError:  # only a key holder can get here, but stay total
                return None
    return None


def _parse_token(token: str) -> tuple[int, bytes, bytes] | None:
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    digest_id = int(match.group(1))
    blob = match.group(2)
    try:
        raw = base64.b32decode(blob.upper() + "=" * (-len(blob) % 8))
    except (binascii.Error, ValueError):
        return None
    # Unused trailing bits or an impossible length would let two spellings decode alike.
    if _b32(raw) != blob or len(raw) <= _MAC_BYTES:
        return None
    return digest_id, raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]


def _mac_prefix(digest_id: int) -> bytes:
    return b"verp\0" + str(digest_id).encode("ascii") + b"\0"


def _mac(key: bytes, digest_id: int, subscriber: bytes) -> bytes:
    body = _mac_prefix(digest_id) + subscriber
    return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _is_plain_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable() and not any(c.isspace() for c in text)
