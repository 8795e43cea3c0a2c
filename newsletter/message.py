"""The one place that builds the MIME message.

A digest's message is prepared once: headers and both bodies are encoded with the personal
fields left as tokens, then split at the tokens. Personalizing for one recipient only encodes
that recipient's few values and joins bytes, so per-message work stays in microseconds.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from newsletter.config import Settings
from newsletter.models import Recipient
from newsletter.personalization import ATTR_PREFIX, TokenSet

CRLF = "\r\n"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
NAME_FALLBACK = "there"  # "Hello there," when a subscriber has no name


def header_safe(value: str) -> str:
    """A header value with CR, LF and other control characters folded to single spaces."""
    return _CONTROL.sub(" ", value).strip()


def _encode_header_text(value: str) -> str:
    value = header_safe(value)
    if value.isascii():
        return value
    return Header(value, "utf-8", maxlinelen=76).encode(linesep=CRLF)


def _qp(data: str) -> bytes:
    """Quoted-printable with CRLF lines, never ending in a line too long for a soft break."""
    encoded = binascii.b2a_qp(data.replace("\r\n", "\n").replace("\n", CRLF).encode("utf-8"))
    last_break = encoded.rfind(b"\r\n")
    tail = len(encoded) - (last_break + 2 if last_break >= 0 else 0)
    if tail > 70:  # leave room for the '=' soft break that joins the next piece
        cut = len(encoded) - 20
        while encoded[cut - 1 : cut] == b"=" or encoded[cut - 2 : cut - 1] == b"=":
            cut -= 1
        encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
    return encoded


_SOFT_BREAK = b"=\r\n"


@dataclass(frozen=True)
class Envelope:
    """One personalized message ready for SMTP."""

    sender: str
    recipient: str
    data: bytes
    message_id: str


class _Body:
    """A body split at its tokens: static encoded pieces and the fields between them."""

    def __init__(self, pieces: list[bytes], fields: list[str]) -> None:
        self.pieces = pieces
        self.fields = fields

    @classmethod
    def split(cls, text: str, pattern: re.Pattern[str], encode: Callable[[str], bytes]) -> _Body:
        parts = pattern.split(text)  # static, field, static, field, ..., static
        return cls([encode(p) for p in parts[0::2]], parts[1::2])

    def join(self, values: Mapping[str, bytes]) -> bytes:
        out = [self.pieces[0]]
        for field_name, piece in zip(self.fields, self.pieces[1:], strict=True):
            out.append(values.get(field_name, b""))
            out.append(piece)
        return b"".join(out)


class PreparedMessage:
    """A digest's MIME message with holes for the personal fields; see :meth:`personalize`."""

    def __init__(
        self,
        *,
        digest_id: int,
        subject: str,
        html_body: str,
        text_body: str,
        tokens: TokenSet,
        settings: Settings,
        unsubscribe_url: Callable[[Recipient], str],
        dkim_sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        sender = settings.newsletter
        self.sender = str(sender.from_address)
        self.domain = self.sender.rpartition("@")[2]
        self._digest_id = digest_id
        # Stable per delivery, so a retry or a rare after-crash duplicate carries the same
        # Message-ID and mail clients collapse it; the digest's nonce (hashed, since it guards
        # the tokens) keeps ids unique across databases.
        self._id_salt = hashlib.sha256(tokens.nonce.encode()).hexdigest()[:12]
        self._unsubscribe_url = unsubscribe_url
        self._mailto = sender.unsubscribe_mailto
        self._dkim_sign = dkim_sign
        boundary = "=_nl_" + secrets.token_hex(12)
        list_id = sender.list_id or f"digest.{self.domain}"
        headers = [
            f"From: {formataddr((header_safe(sender.from_name), self.sender), charset='utf-8')}",
            "To: {to}",
            f"Subject: {_encode_header_text(subject)}",
            "Date: {date}",
            "Message-ID: {message_id}",
            f"List-Id: {_encode_header_text(sender.title)} <{header_safe(list_id)}>",
            "List-Unsubscribe: {list_unsubscribe}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        ]
        if sender.reply_to:
            headers.append(f"Reply-To: {sender.reply_to}")
        headers += [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        personal = {
            "To: {to}",
            "Date: {date}",
            "Message-ID: {message_id}",
            "List-Unsubscribe: {list_unsubscribe}",
        }
        # str.format fills the personal headers; braces in the static ones (a subject) stay literal.
        headers = [h if h in personal else h.replace("{", "{{").replace("}", "}}") for h in headers]
        self._header_template = CRLF.join(headers) + CRLF + CRLF
        part_head = (
            f'--{boundary}{CRLF}Content-Type: text/%s; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
        )
        pattern = tokens.pattern
        self._text = _Body.split(text_body, pattern, _qp)
        self._html = _Body.split(html_body, pattern, _qp)
        self._text_head = (part_head % "plain").encode()
        self._html_head = (CRLF + part_head % "html").encode()
        self._tail = f"{CRLF}--{boundary}--{CRLF}".encode()

    def personalize(self, recipient: Recipient, *, now: datetime) -> Envelope:
        """The complete message for one recipient, as bytes ready for ``sendmail``."""
        name = header_safe(recipient.name)
        unsubscribe = self._unsubscribe_url(recipient)
        message_id = f"<{self._digest_id}.{recipient.delivery_id}.{self._id_salt}@{self.domain}>"
        list_unsubscribe = f"<{unsubscribe}>"
        if self._mailto:
            list_unsubscribe += f",{CRLF} <mailto:{self._mailto}?subject=unsubscribe>"
        head = self._header_template.format(
            to=formataddr((name, recipient.email), charset="utf-8"),
            date=format_datetime(now),
            message_id=message_id,
            list_unsubscribe=list_unsubscribe,
        )
        plain = {
            "name": name or NAME_FALLBACK,
            "email": recipient.email,
            "unsubscribe_url": unsubscribe,
            **{ATTR_PREFIX + k: v for k, v in recipient.attrs.items()},
        }
        text_values = {k: _SOFT_BREAK + _qp(v) + _SOFT_BREAK for k, v in plain.items()}
        html_values = {
            k: _SOFT_BREAK + _qp(html.escape(v, quote=True)) + _SOFT_BREAK for k, v in plain.items()
        }
        data = b"".join(
            (
                head.encode("ascii"),
                self._text_head,
                self._text.join(text_values),
                self._html_head,
                self._html.join(html_values),
                self._tail,
            )
        )
        if self._dkim_sign is not None:
            data = self._dkim_sign(data)
        return Envelope(
            sender=self.sender, recipient=recipient.email, data=data, message_id=message_id
        )


def fill_tokens(text: str, tokens: TokenSet, values: Mapping[str, str], *, escape: bool) -> str:
    """Replace personal-field tokens in rendered text directly (previews, archive pages)."""

    def value(match: re.Match[str]) -> str:
        raw = values.get(match.group(1), "")
        return html.escape(raw, quote=True) if escape else raw

    return tokens.pattern.sub(value, text)


def confirmation_message(
    settings: Settings,
    *,
    to: str,
    name: str,
    subject: str,
    html_body: str,
    text_body: str,
    now: datetime,
    dkim_sign: Callable[[bytes], bytes] | None = None,
) -> Envelope:
    """The double opt-in email for one address: a small text + HTML message, built whole."""
    from email.headerregistry import Address
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import make_msgid

    sender = settings.newsletter
    from_address = str(sender.from_address)
    domain = from_address.rpartition("@")[2]
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(header_safe(sender.from_name), addr_spec=from_address)
    message["To"] = Address(header_safe(name), addr_spec=to)
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(now)
    message_id = make_msgid(domain=domain)
    message["Message-ID"] = message_id
    if sender.reply_to:
        message["Reply-To"] = str(sender.reply_to)
    message.set_content(text_body, cte="quoted-printable")
    message.add_alternative(html_body, subtype="html", cte="quoted-printable")
    data = message.as_bytes()
    if dkim_sign is not None:
        data = dkim_sign(data)
    return Envelope(sender=from_address, recipient=to, data=data, message_id=message_id)
