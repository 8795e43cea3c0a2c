"""Reading the parts of a report message: headers, RFC 3464 fields, the enclosed original.

Everything here works on ``email.message.Message`` objects parsed with the lenient
``compat32`` policy (what ``flufl.bounce`` expects too) and never raises on odd input:
undecodable headers come back with replacement characters, missing parts as empty values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from email.utils import getaddresses

MAX_DIAGNOSTIC_CHARS = 300
_REPLY_CODE = re.compile(r"^\s*([245]\d\d)[- ]([245]\.\d{1,3}\.\d{1,3}\s)?")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


@dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of an RFC 3464 delivery-status part."""

    action: str  # lowercase: failed, delayed, delivered, relayed, expanded (or junk)
    status: str | None  # "5.1.1"
    diagnostic: str | None
    original_recipient: str | None
    final_recipient: str | None


class _RawHeaderPolicy(Compat32):
    """``compat32``, except that header values with 8-bit bytes stay ``str`` (the bytes as
    surrogate escapes, decoded by :func:`header_text`) instead of becoming ``Header`` objects
    that neither we nor ``flufl.bounce`` expect."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_POLICY = _RawHeaderPolicy()


def parse_message(raw: bytes) -> Message:
    """The message tree of ``raw``, parsed leniently (the stdlib parser records defects)."""
    return message_from_bytes(raw, policy=_POLICY)


def parse_headers(raw: bytes) -> Message:
    """Only the header block of ``raw``, parsed like :func:`parse_message`."""
    return BytesHeaderParser(policy=_POLICY).parsebytes(raw)


def header_text(message: Message, name: str) -> str:
    """The value of header ``name`` as text (``""`` when absent), RFC 2047 words decoded."""
    return _decoded(message.get(name))


def header_texts(message: Message, name: str) -> list[str]:
    """Every value of header ``name``, decoded like :func:`header_text`."""
    return [_decoded(value) for value in message.get_all(name) or []]


def addresses_in(values: list[str]) -> list[str]:
    """The addr-specs in address header values, in order; garbage gives nothing."""
    found = []
    for value in values:
        try:
            pairs = getaddresses([" ".join(value.split())])  # unfolded, one value at a time
        except (ValueError, IndexError, TypeError):
            continue
        found += [address for _, address in pairs if is_plain_address(address)]
    return found


def is_plain_address(address: str) -> bool:
    """Looks like ``local@domain``: one line, no spaces or control characters."""
    return "@" in address and address.isprintable() and not any(c.isspace() for c in address)


def report_parts(message: Message, content_type: str) -> Iterator[Message]:
    """The parts of ``message`` with ``content_type`` (e.g. ``message/delivery-status``)."""
    for part in message.walk():
        if part.get_content_type() == content_type:
            yield part


def field_blocks(part: Message) -> list[Message]:
    """The header blocks inside a ``message/delivery-status`` or ``message/feedback-report``."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    return []


def recipient_statuses(part: Message) -> list[RecipientStatus]:
    """The per-recipient blocks of one delivery-status part (the per-message block skipped)."""
    statuses = []
    for block in field_blocks(part):
        action = header_text(block, "Action").strip().lower()
        final = typed_address(header_text(block, "Final-Recipient"))
        original = typed_address(header_text(block, "Original-Recipient"))
        if not action and final is None and original is None:
            continue  # the per-message block (Reporting-MTA, Arrival-Date, ...)
        diagnostic = _after_type(header_text(block, "Diagnostic-Code"))
        status = find_status(header_text(block, "Status")) or find_status(diagnostic or "")
        statuses.append(RecipientStatus(action, status, diagnostic, original, final))
    return statuses


def enclosed_headers(message: Message) -> list[Message]:
    """The header blocks of enclosed original messages (``message/rfc822`` or
    ``text/rfc822-headers`` parts), outermost first."""
    found: list[Message] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                found.extend(inner for inner in payload[:1] if isinstance(inner, Message))
        elif content_type == "text/rfc822-headers":
            data = body_bytes(part).lstrip(b"\r\n")
            found.append(parse_message(data))
    return found


def body_bytes(part: Message) -> bytes:
    """The decoded body of a leaf part (``b""`` for containers or undecodable bodies)."""
    if part.is_multipart():
        return b""
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError, MessageError):
        return b""
    return data if isinstance(data, bytes) else b""


def body_text(part: Message) -> str:
    """The body of a leaf part as text, in its declared charset when that is known."""
    data = body_bytes(part)
    charset = part.get_content_charset("utf-8") or "utf-8"
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def message_ids(headers: Message, name: str = "Message-ID") -> list[str]:
    """The ``<id@host>`` values of header ``name`` (``Message-ID`` unless told)."""
    found: list[str] = []
    for value in header_texts(headers, name):
        match = _MESSAGE_ID.search(value)
        if match:
            found.append(match.group(0))
    return found


def find_status(text: str) -> str | None:
    """The first RFC 3463 enhanced status code (``5.1.1``) in ``text``."""
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else None


def one_line(text: str) -> str:
    """``text`` on one line without control characters, capped for storage and logs."""
    visible = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    flat = " ".join(visible.split())
    return flat[:MAX_DIAGNOSTIC_CHARS]


def typed_address(value: str) -> str | None:
    """The address in an RFC 3464 field like ``rfc822; user@example.org``, else ``None``."""
    address_type, semicolon, address = value.partition(";")
    if not semicolon or address_type.strip().lower() != "rfc822":
        return None
    address = address.strip().removeprefix("<").removesuffix(">").strip()
    return address if is_plain_address(address) else None


def _after_type(value: str) -> str | None:
    """The text of a ``smtp; 550 5.1.1 ...`` field without its type, on one line; the reply
    code repeated on each line of a multiline SMTP reply (``550-5.1.1``) is kept once."""
    _, semicolon, text = value.partition(";")
    first, *rest = (text if semicolon else value).splitlines() or [""]
    first = _REPLY_CODE.sub(lambda m: f"{m.group(1)} {m.group(2) or ''}", first, count=1)
    line = one_line(" ".join([first, *(_REPLY_CODE.sub("", more, count=1) for more in rest)]))
    return line or None


def _decoded(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if not text.isascii():  # raw 8-bit bytes (SMTPUTF8 headers are UTF-8)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError, MessageError):
        return text
