"""The one place that builds MIME messages, byte for byte as they go on the wire.

A digest's message is prepared once: headers and both bodies are encoded with the personal
fields left as tokens, then split at the tokens. Personalizing for one recipient only encodes
that recipient's few values and joins bytes, so per-message work stays in microseconds.

Every line ends in CRLF and stays within 78 characters (bodies are quoted-printable; header
rules in :mod:`newsletter.headers`). Personal values are cleaned the same way in headers and
bodies (:func:`newsletter.headers.clean_text`), and names are cut to ``MAX_NAME_CHARS``.
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
from email.utils import format_datetime

from newsletter.config import Settings
from newsletter.headers import (
    CRLF,
    ascii_url,
    clean_text,
    mailbox_field,
    text_field,
    tokens_field,
    wire_address,
)
from newsletter.models import Recipient
from newsletter.personalization import ATTR_PREFIX, MAX_ATTR_CHARS, MAX_NAME_CHARS, TokenSet

NAME_FALLBACK = "there"  # "Hello there," when a subscriber has no name
# What a test copy to an address that is not on the list says instead of an unsubscribe link.
TEST_COPY_UNSUBSCRIBE_TEXT = "(none: this is a test copy to an address that is not on the list)"
TEST_COPY_UNSUBSCRIBE_HREF = "#test-copy-to-an-address-not-on-the-list"
_SOFT_BREAK = b"=\r\n"
_QP_TAIL = 70  # longest last line of an encoded piece, leaving room for a soft break


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends and soft breaks, ending in a line short enough to
    take the ``=`` of a soft break.

    ``binascii.b2a_qp`` writes its soft breaks as ``=\\n`` unless the first line break of its
    input is CRLF, so text without any line break (a name, a URL) gets them fixed here.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.replace("\n", CRLF).encode("utf-8")
    encoded = binascii.b2a_qp(data)
    if b"\n" not in data:
        encoded = encoded.replace(b"=\n", _SOFT_BREAK)
    last_break = encoded.rfind(b"\r\n")
    tail = len(encoded) - (last_break + 2 if last_break >= 0 else 0)
    if tail > _QP_TAIL:
        cut = len(encoded) - 20
        while encoded[cut - 1 : cut] == b"=" or encoded[cut - 2 : cut - 1] == b"=":
            cut -= 1  # never inside an =XX escape
        encoded = encoded[:cut] + _SOFT_BREAK + encoded[cut:]
    return encoded


@dataclass(frozen=True)
class Envelope:
    """One message ready for SMTP. ``smtputf8``: an address in it is UTF-8, so only a server
    offering SMTPUTF8 can take it."""

    sender: str
    recipient: str
    data: bytes
    message_id: str
    smtputf8: bool = False


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


def _multipart_heads(boundary: str) -> tuple[bytes, bytes, bytes]:
    """The MIME lines around a text part and an HTML part, both quoted-printable UTF-8."""
    part_head = (
        f'--{boundary}{CRLF}Content-Type: text/%s; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"
    )
    return (
        (part_head % "plain").encode(),
        (CRLF + part_head % "html").encode(),
        f"{CRLF}--{boundary}--{CRLF}".encode(),
    )


def _mime_fields(boundary: str) -> list[str]:
    return ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"']


class PreparedMessage:
    """A mailing's MIME message with holes for the personal fields; see :meth:`personalize`.

    The personal links are functions of the recipient. A digest has ``unsubscribe_url``; a
    confirmation email has ``confirm_url`` instead and is transactional: no List-Id, no
    List-Unsubscribe fields. A test copy to an address that is not on the list has neither:
    no List-Unsubscribe fields and a note instead of the unsubscribe link in its bodies.
    ``envelope_sender`` gives each recipient's MAIL FROM (a VERP address naming the
    delivery); without it, the From address is the envelope sender.
    """

    def __init__(
        self,
        *,
        digest_id: int,
        subject: str,
        html_body: str,
        text_body: str,
        tokens: TokenSet,
        settings: Settings,
        unsubscribe_url: Callable[[Recipient], str] | None,
        confirm_url: Callable[[Recipient], str] | None = None,
        dkim_sign: Callable[[bytes], bytes] | None = None,
        envelope_sender: Callable[[Recipient], str] | None = None,
    ) -> None:
        sender = settings.newsletter
        self.sender, self._sender_utf8 = wire_address(str(sender.from_address))
        self.domain = self.sender.rpartition("@")[2]
        self._digest_id = digest_id
        # Stable per delivery, so a retry or a rare after-crash duplicate carries the same
        # Message-ID and mail clients collapse it. Its tag is a MAC of the delivery keyed by
        # the digest's nonce (hashed, since it guards the tokens): unique across databases,
        # and no recipient can work out another delivery's Message-ID from their own, so a
        # complaint that names only a Message-ID (bounce reports) cannot be forged.
        self._id_key = hashlib.sha256(b"message-id\0" + tokens.nonce.encode()).digest()
        self._envelope_sender = envelope_sender
        self._unsubscribe_url = unsubscribe_url
        self._confirm_url = confirm_url
        self._mailto = None
        if sender.unsubscribe_mailto:
            mailto, _ = wire_address(str(sender.unsubscribe_mailto))
            self._mailto = f"<mailto:{ascii_url(mailto)}?subject=unsubscribe>"
        self._dkim_sign = dkim_sign
        boundary = "=_nl_" + secrets.token_hex(12)
        list_id = clean_text(sender.list_id or f"digest.{self.domain}")
        self._from = mailbox_field("From", clean_text(sender.from_name), self.sender) + CRLF
        self._subject = text_field("Subject", clean_text(subject)) + CRLF
        title = clean_text(sender.title)
        self._list_id = (
            mailbox_field("List-Id", title, list_id) if title else f"List-Id: <{list_id}>"
        ) + CRLF
        if confirm_url is not None:  # one person's transaction, not a message of the list
            self._list_id = ""
        tail = []
        if sender.reply_to:
            tail.append("Reply-To: " + wire_address(str(sender.reply_to))[0])
        self._head_tail = CRLF.join([*tail, *_mime_fields(boundary)]) + CRLF + CRLF
        pattern = tokens.pattern
        self._text = _Body.split(text_body, pattern, _qp)
        self._html = _Body.split(html_body, pattern, _qp)
        self._text_head, self._html_head, self._tail = _multipart_heads(boundary)

    def personalize(self, recipient: Recipient, *, now: datetime) -> Envelope:
        """The complete message for one recipient, as bytes ready for SMTP.

        Raises ``UnsendableAddress`` (or, on a bug, anything): the caller fails this one
        delivery with the reason and goes on with the others.
        """
        name = clean_text(recipient.name, MAX_NAME_CHARS)
        address, utf8 = wire_address(recipient.email)
        smtputf8 = utf8 or self._sender_utf8
        delivery = str(recipient.delivery_id).encode("ascii")
        tag = hashlib.blake2b(delivery, key=self._id_key, digest_size=8).hexdigest()
        message_id = f"<{self._digest_id}.{recipient.delivery_id}.{tag}@{self.domain}>"
        head = [
            self._from,
            mailbox_field("To", name, address),
            CRLF,
            self._subject,
            f"Date: {format_datetime(now)}{CRLF}Message-ID: {message_id}{CRLF}",
            self._list_id,
        ]
        # Each personal link as the text part and as the HTML part show it.
        links: dict[str, tuple[str, str]] = {}
        if self._unsubscribe_url is not None:
            unsubscribe = self._unsubscribe_url(recipient)
            fields = [f"<{ascii_url(unsubscribe)}>"]
            if self._mailto:
                fields = [fields[0] + ",", self._mailto]
            head += [
                tokens_field("List-Unsubscribe", fields),
                CRLF,
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                CRLF,
            ]
            links["unsubscribe_url"] = (unsubscribe, unsubscribe)
        elif self._confirm_url is None:
            links["unsubscribe_url"] = (TEST_COPY_UNSUBSCRIBE_TEXT, TEST_COPY_UNSUBSCRIBE_HREF)
        if self._confirm_url is not None:
            confirm = self._confirm_url(recipient)
            links["confirm_url"] = (confirm, confirm)
        head.append(self._head_tail)
        values = {
            "name": name or NAME_FALLBACK,
            "email": recipient.email,
            **{
                ATTR_PREFIX + k: clean_text(str(v), MAX_ATTR_CHARS)
                for k, v in recipient.attrs.items()
            },
        }
        text_values = {k: _SOFT_BREAK + _qp(v) + _SOFT_BREAK for k, v in values.items()}
        html_values = {
            k: _SOFT_BREAK + _qp(html.escape(v, quote=True)) + _SOFT_BREAK
            for k, v in values.items()
        }
        for field_name, (text_link, html_link) in links.items():
            text_values[field_name] = _SOFT_BREAK + _qp(text_link) + _SOFT_BREAK
            html_values[field_name] = (
                _SOFT_BREAK + _qp(html.escape(html_link, quote=True)) + _SOFT_BREAK
            )
        data = b"".join(
            (
                "".join(head).encode("utf-8" if smtputf8 else "ascii"),
                self._text_head,
                self._text.join(text_values),
                self._html_head,
                self._html.join(html_values),
                self._tail,
            )
        )
        if self._dkim_sign is not None:
            data = self._dkim_sign(data)
        sender = self.sender if self._envelope_sender is None else self._envelope_sender(recipient)
        return Envelope(sender, address, data, message_id, smtputf8)


def fill_tokens(text: str, tokens: TokenSet, values: Mapping[str, str], *, escape: bool) -> str:
    """Replace personal-field tokens in rendered text directly (previews, archive pages)."""

    def value(match: re.Match[str]) -> str:
        raw = values.get(match.group(1), "")
        return html.escape(raw, quote=True) if escape else raw

    return tokens.pattern.sub(value, text)
