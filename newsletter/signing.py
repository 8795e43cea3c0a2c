"""Signed, self-contained link tokens (unsubscribe, confirm) using HMAC-SHA256.

A token is ``base64url(purpose:subject:issued).base64url(mac)``; the purpose is inside the
MAC, so an unsubscribe token cannot be used as a confirmation token or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from newsletter.errors import TokenError

_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Makes and checks tokens with one secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise TokenError("[web] secret must be at least 16 characters long")
        self._key = hashlib.sha256(b"newsletter-links\0" + secret.encode()).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, purpose: str, subject: str | int, *, now: datetime) -> str:
        """A token saying ``subject`` may do ``purpose``, issued at ``now``."""
        body = f"{purpose}:{subject}:{int(now.timestamp())}".encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def read(
        self, token: str, purpose: str, *, now: datetime, max_age: timedelta
    ) -> tuple[str, datetime]:
        """The subject and issue time of a valid token; ``TokenError`` for anything else."""
        try:
            body_part, mac_part = token.split(".")
            body, mac = _unb64(body_part), _unb64(mac_part)
            token_purpose, subject, issued_raw = body.decode().split(":")
            issued = datetime.fromtimestamp(int(issued_raw), UTC)
        except (ValueError, UnicodeDecodeError):
            raise TokenError("this link is malformed; copy the whole link from the email") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise TokenError(
                "this link is not valid (it was changed or is not from this newsletter)"
            )
        if token_purpose != purpose:
            raise TokenError("this link is not meant for this page")
        if now - issued > max_age:
            raise TokenError("this link has expired; use the link in a more recent email")
        return subject, issued
