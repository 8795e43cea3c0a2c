"""Optional DKIM signing (dkimpy) with a configured key and selector."""

from __future__ import annotations

from collections.abc import Callable

import dkim

from newsletter.config import DkimSettings
from newsletter.errors import ConfigError

_SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
]


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
    domain = (settings.domain or default_domain).encode()

    def sign(message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message, selector, domain, key, include_headers=_SIGNED_HEADERS
        )
        return signature + message

    try:
        sign(b"From: a@b\r\nSubject: t\r\n\r\nx\r\n")
    except dkim.KeyFormatError as exc:
        raise ConfigError(
            f"[dkim] private_key_file: {settings.private_key_file} is not a usable key: {exc}"
        ) from None
    return sign
