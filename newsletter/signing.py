"""Signed, self-contained link tokens (unsubscribe, confirm) using HMAC-SHA256.

A token is ``base64url(purpose:subject:issued).base64url(mac)`` without padding; the purpose
is inside the MAC, so an unsubscribe token cannot be used as a confirmation token or the other
way round. Decoding is strict: only the one canonical spelling of a token is accepted (no
padding, no stray characters, unused bits zero), so no two strings are the same link. Tokens
signed with a previous secret (``[web] previous_secrets``) are still read; new ones are signed
with the current secret only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from newsletter.errors import TokenError

_MAC_BYTES = 16
MAX_TOKEN_CHARS = 300  # a real token is ~80 characters; anything much longer is refused unread
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PURPOSE = re.compile(r"[a-z]{1,20}")
_SUBJECT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ISSUED = re.compile(r"0|[1-9][0-9]{0,10}")  # canonical decimal seconds, no sign
MAX_ISSUED = 2**33  # the year 2242: later issue times are refused, not converted

MALFORMED = "this link is malformed; copy the whole link from the email"
NOT_OURS = "this link is not valid (it was changed or is not from this newsletter)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url, accepting only the canonical spelling of the bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # nonzero unused bits in the last character
        raise ValueError("not canonical base64url")
    return data


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"newsletter-links\0" + secret.encode()).digest()


class Signer:
    """Makes tokens with ``secret``; reads tokens made with it or any of ``previous``."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        for value in (secret, *previous):
            if len(value) < 16:
                raise TokenError("[web] secret must be at least 16 characters long")
        self._key = _key(secret)
        self._keys = [self._key, *(_key(p) for p in previous if p != secret)]

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, purpose: str, subject: str | int, *, now: datetime) -> str:
        """A token saying ``subject`` may do ``purpose``, issued at ``now``."""
        subject = str(subject)
        if not _PURPOSE.fullmatch(purpose) or not _SUBJECT.fullmatch(subject):
            raise ValueError(f"cannot sign purpose {purpose!r} for subject {subject!r}")
        body = f"{purpose}:{subject}:{int(now.timestamp())}".encode()
        return f"{_b64(body)}.{_b64(self._mac(self._key, body))}"

    def read(self, token: str, purpose: str) -> tuple[str, datetime]:
        """The subject and issue time of a valid token; ``TokenError`` for anything else.

        Expiry is the caller's business: some links never expire.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(MALFORMED)
        try:
            body_part, mac_part = token.split(".")
            body, mac = _unb64(body_part), _unb64(mac_part)
        except ValueError:
            raise TokenError(MALFORMED) from None
        if len(mac) != _MAC_BYTES or not any(
            hmac.compare_digest(mac, self._mac(key, body)) for key in self._keys
        ):
            raise TokenError(NOT_OURS)
        # Only we sign, but a bug or an old release could have signed anything: check it all.
        parts = body.decode("ascii", errors="replace").split(":")
        if (
            len(parts) != 3
            or not _PURPOSE.fullmatch(parts[0])
            or not _SUBJECT.fullmatch(parts[1])
            or not _ISSUED.fullmatch(parts[2])
            or int(parts[2]) > MAX_ISSUED
        ):
            raise TokenError(MALFORMED)
        token_purpose, subject, issued_raw = parts
        if token_purpose != purpose:
            raise TokenError("this link is not meant for this page")
        return subject, datetime.fromtimestamp(int(issued_raw), UTC)
