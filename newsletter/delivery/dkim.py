"""Optional DKIM signing (dkimpy) with a configured key and selector.

Signatures use ``relaxed/relaxed`` canonicalization, which survives the rewrapping and
whitespace changes relays make. The fields a forger would most like to add a second copy of
(From, Subject, Reply-To, List-Unsubscribe, List-Unsubscribe-Post) are signed one extra time
("over-signed", RFC 6376 section 8.15): a copy added in transit, or a Reply-To added to a
message that had none, breaks the signature.
"""

from __future__ import annotations

from collections.abc import Callable

import dkim

from newsletter.config import DkimSettings
from newsletter.errors import ConfigError
from newsletter.headers import UnsendableAddress, ascii_domain

_OVERSIGNED = [b"from", b"subject", b"reply-to", b"list-unsubscribe", b"list-unsubscribe-post"]
_SIGNED_ONCE = [b"to", b"date", b"message-id", b"list-id", b"mime-version", b"content-type"]
SIGNED_HEADERS = _OVERSIGNED + _OVERSIGNED + _SIGNED_ONCE
CANONICALIZATION = (b"relaxed", b"relaxed")


def make_signer(settings: DkimSettings, *, default_domain: str) -> Callable[[bytes], bytes] | None:
    """A function that prepends a DKIM-Signature header, or None when DKIM is not configured."""
    if not settings.selector and not settings.private_key_file:
        return None
    if not (settings.selector and settings.private_key_file):
        raise ConfigError("[dkim] needs both selector and private_key_file (or neither)")
    try:
        key = settings.private_key_file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"[dkim] private_key_file: cannot read {settings.private_key_file}: {exc.strerror}"
        ) from None
    selector = settings.selector.encode()
    try:
        domain = ascii_domain(settings.domain or default_domain).encode()
    except UnsendableAddress as exc:
        raise ConfigError(f"[dkim] domain: {exc}") from None

    def sign(message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message,
            selector,
            domain,
            key,
            canonicalize=CANONICALIZATION,
            include_headers=SIGNED_HEADERS,
        )
        return signature + message

    try:
        sign(b"From: a@b\r\nSubject: t\r\n\r\nx\r\n")
    except dkim.KeyFormatError as exc:
        raise ConfigError(
            f"[dkim] private_key_file: {settings.private_key_file} is not a usable key: {exc}"
        ) from None
    return sign
