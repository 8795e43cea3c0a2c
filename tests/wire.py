"""Wire conformance: the rules every message a test captures must keep, checked on its bytes.

:func:`problems` lists every way a message breaks them and :func:`assert_conforms` fails a
test with that list. The capture server (``tests/smtp_servers.py``) runs the check on every
message it receives, so no test can forget it; call it yourself on bytes from elsewhere.

The rules:

- line ends are CRLF only (no bare LF, no bare CR) and no line is over 998 octets;
- 8-bit octets only in an SMTPUTF8 transaction (everything else is 7-bit: quoted-printable
  bodies, encoded-words in headers);
- header lines are at most 78 characters unless nothing could fold them (no whitespace after
  their first token); encoded-words are at most 75 characters and a line carrying one at most
  76 (RFC 2047 section 2);
- the message parses with the stdlib (``policy.default``) without defects, and its From, To
  and Subject decode to the same text through two independent stdlib routes (the header
  registry, and ``parseaddr`` + ``decode_header`` on the raw field);
- the To address is the envelope recipient;
- a DKIM-Signature verifies (dkimpy, with the test key from :func:`dkim_key` as the DNS).

CPython before 3.14 keeps the whitespace between two adjacent encoded-words in a display name
(gh-128110), which RFC 2047 section 6.2 says to drop. Mail clients drop it, so a long
non-ASCII name must be written that way; :func:`mailbox` decodes display names the RFC way,
and the check only requires the header registry's reading to match it up to spaces where two
encoded-words meet.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.errors import NonASCIILocalPartDefect
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import compat32
from email.utils import parseaddr
from pathlib import Path

import dkim

MAX_LINE_OCTETS = 998
FOLD_AT = 78
ENCODED_WORD_LINE = 76
MAX_ENCODED_WORD = 75
_ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_ADJACENT_ENCODED_WORDS = re.compile(r"\?=\s+=\?")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")


@dataclass(frozen=True)
class DkimKey:
    """The test DKIM key: settings for ``[dkim]`` and the TXT record a resolver would return."""

    selector: str
    private_key_file: Path
    record: bytes

    def settings(self) -> dict[str, str]:
        return {"selector": self.selector, "private_key_file": str(self.private_key_file)}


@functools.cache
def dkim_key() -> DkimKey:
    """One RSA key (openssl) for the whole test session; its record answers for any domain."""
    folder = Path(tempfile.mkdtemp(prefix="newsletter-dkim-"))
    key = folder / "dkim.pem"
    with key.open("wb") as out:
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            stdout=out,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return DkimKey("nltest", key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public))


def dkim_dns(name: bytes, timeout: int = 5) -> bytes | None:
    """A resolver for dkimpy: the test key's record for ``nltest._domainkey.<any domain>``."""
    if name.startswith(dkim_key().selector.encode() + b"._domainkey."):
        return dkim_key().record
    return None


def parse(data: bytes, *, smtputf8: bool = False) -> EmailMessage:
    """The message as the stdlib reads it (UTF-8 header fields when sent with SMTPUTF8)."""
    if smtputf8:
        message: Message = message_from_string(data.decode("utf-8"), policy=policy.default)
    else:
        message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _raw_field(data: bytes, name: str) -> str | None:
    """A field's raw value, unfolded, as it is on the wire (no decoding)."""
    head = data.partition(b"\r\n\r\n")[0].decode("utf-8", "replace")
    match = re.search(
        rf"^{re.escape(name)}:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)",
        head,
        flags=re.IGNORECASE | re.MULTILINE,
    )
    return re.sub(r"\r\n(?=[ \t])", "", match.group(1)).strip() if match else None


def _decode(text: str) -> str:
    return str(make_header(decode_header(text)))


def body(message: EmailMessage, kind: str) -> str:
    """The decoded ``text/<kind>`` part of a parsed message (``"plain"`` or ``"html"``)."""
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def mailbox(data: bytes, name: str) -> tuple[str, str]:
    """``(display name, address)`` of a one-address field, display name decoded per RFC 2047."""
    raw = _raw_field(data, name)
    assert raw is not None, f"no {name} field"
    display, address = parseaddr(raw)
    return _decode(display), address


def subject(data: bytes) -> str:
    """The Subject, decoded per RFC 2047."""
    raw = _raw_field(data, "Subject")
    assert raw is not None, "no Subject field"
    return _decode(raw)


def unquoted(address: str) -> str:
    """The address with a quoted local part unquoted: the same address, however written."""
    local, at, domain = address.rpartition("@")
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return f"{local}{at}{domain}"


_QUOTED_LOCAL_PART = re.compile(rb'"(?:[^"\\]|\\.)*"(?=@)')


def _header_problems(head: bytes) -> list[str]:
    found = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            content = line.lstrip(b" \t")
        else:
            field_name, colon, content = line.partition(b":")
            if not (colon and _FIELD_NAME.fullmatch(field_name)):
                found.append(f"not a header field: {line[:60]!r}")
                continue
            content = content.lstrip(b" \t")
        words = _ENCODED_WORD.findall(line)
        if any(len(word) > MAX_ENCODED_WORD for word in words):
            found.append(f"encoded-word over {MAX_ENCODED_WORD} characters: {line[:60]!r}")
        if words and len(line) > ENCODED_WORD_LINE:
            found.append(f"line with encoded-words over {ENCODED_WORD_LINE}: {line[:60]!r}")
        # Whitespace inside a quoted local part is no place to fold an address at.
        unquoted_content = _QUOTED_LOCAL_PART.sub(b'""', content)
        if len(line) > FOLD_AT and re.search(rb"[ \t]", unquoted_content):
            found.append(f"header line over {FOLD_AT} characters, foldable: {line[:60]!r}")
    return found


def _mime_problems(part: Message, body: bytes) -> list[str]:
    """The body of ``part`` walked with its declared structure and decoded with binascii: a
    quick check of the structure the full parse checks, for every message of a long send."""
    if part.get_content_maintype() == "multipart":
        boundary = part.get_boundary()
        if not boundary:
            return ["multipart without a boundary"]
        delimiter = b"--" + boundary.encode("ascii")
        chunks = body.split(b"\r\n" + delimiter)
        if not body.startswith(delimiter) or not chunks[-1].startswith(b"--"):
            return ["multipart body does not start or end with its boundary"]
        found = []
        for chunk in [chunks[0][len(delimiter) :], *chunks[1:-1]]:
            head, blank, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            if not blank:
                head, content = chunk.removeprefix(b"\r\n"), b""
            inner = BytesHeaderParser(policy=compat32).parsebytes(head + b"\r\n\r\n")
            found += _mime_problems(inner, content)
        return found
    encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    try:
        if encoding == "quoted-printable":
            decoded = binascii.a2b_qp(body)
        elif encoding == "base64":
            decoded = base64.b64decode(body.replace(b"\r\n", b""), validate=True)
        else:
            decoded = body
        if part.get_content_maintype() == "text":
            decoded.decode(part.get_content_charset() or "ascii")
    except (ValueError, LookupError) as exc:
        return [f"{part.get_content_type()} part does not decode: {exc}"]
    return []


def _parse_problems(
    data: bytes, rcpt_tos: Sequence[str], smtputf8: bool, *, full: bool
) -> list[str]:
    found = []
    if full:  # the stdlib parser over the whole message, every text part decoded
        message = parse(data, smtputf8=smtputf8)
        for part in message.walk():
            found += [f"MIME defect: {defect!r}" for defect in part.defects]
            if part.get_content_maintype() == "text":
                part.get_content()  # decodes the transfer encoding and charset, or raises
    else:  # the stdlib parser over the header, a quick walk over the body
        head, _, body = data.partition(b"\r\n\r\n")
        text = head.decode("utf-8") if smtputf8 else head.decode("ascii")
        message = HeaderParser(policy=policy.default).parsestr(text + "\r\n\r\n")
        assert isinstance(message, EmailMessage)
        found += [f"MIME defect: {defect!r}" for defect in message.defects]
        # The MIME walk reads structure only: the quicker compat32 policy is enough there.
        found += _mime_problems(HeaderParser(policy=compat32).parsestr(text + "\r\n\r\n"), body)
    fields = {name: message[name] for name in ("From", "To", "Subject", "Date", "Message-ID")}
    tolerated = NonASCIILocalPartDefect if smtputf8 else ()
    for name, header in fields.items():
        if header is None:
            found.append(f"no {name} field")
            continue
        found += [
            f"{name}: {defect!r}"
            for defect in header.defects
            if not (tolerated and isinstance(defect, tolerated))
        ]
    if fields["Subject"] is not None and str(fields["Subject"]) != subject(data):
        found.append(f"Subject reads differently: {str(fields['Subject'])!r} / {subject(data)!r}")
    for name in ("From", "To"):
        header = fields[name]
        if header is None:
            continue
        if len(header.addresses) != 1:
            found.append(f"{name} does not hold one address: {str(header)!r}")
            continue
        display, address = mailbox(data, name)
        registry = (header.addresses[0].display_name, header.addresses[0].addr_spec)
        registry = (registry[0], unquoted(registry[1]))
        address_read = unquoted(address)
        raw = _raw_field(data, name) or ""
        if _ADJACENT_ENCODED_WORDS.search(raw):  # gh-128110: compare without spaces
            same = registry[0].replace(" ", "") == display.replace(" ", "")
            same = same and registry[1] == address_read
        else:
            same = registry == (display, address_read)
        if not same:
            found.append(f"{name} reads differently: {registry!r} / {(display, address)!r}")
        if name == "To" and rcpt_tos and address_read not in map(unquoted, rcpt_tos):
            found.append(f"To {address!r} is not the envelope recipient {list(rcpt_tos)!r}")
    return found


def problems(
    data: bytes, *, rcpt_tos: Sequence[str] = (), smtputf8: bool = False, full: bool = True
) -> list[str]:
    """Every way ``data`` breaks the rules in this module's docstring (empty: it conforms).

    ``full=False`` parses only the header with the stdlib parser and walks the body with a
    quicker decoder (same rules), for servers that receive thousands of messages.
    """
    found = []
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf:
        found.append("bare LF")
    if data.count(b"\r") != crlf:
        found.append("bare CR")
    longest = max(map(len, data.split(b"\r\n")), default=0)
    if longest > MAX_LINE_OCTETS:
        found.append(f"a line of {longest} octets (limit {MAX_LINE_OCTETS})")
    if not smtputf8 and not data.isascii():
        found.append("8-bit octets without SMTPUTF8")
    head, blank, _ = data.partition(b"\r\n\r\n")
    if not blank:
        found.append("no empty line after the header")
    found += _header_problems(head)
    if found:
        return found  # the rest assumes a well-formed message
    try:
        found += _parse_problems(data, rcpt_tos, smtputf8, full=full)
    except Exception as exc:  # any parse failure is a finding, not a crash of the check
        found.append(f"cannot be parsed: {type(exc).__name__}: {exc}")
    signed = re.search(rb"^dkim-signature:", head, flags=re.IGNORECASE | re.MULTILINE)
    if signed and not dkim.verify(data, dnsfunc=dkim_dns):
        found.append("DKIM signature does not verify")
    return found


def assert_conforms(data: bytes, *, rcpt_tos: Sequence[str] = (), smtputf8: bool = False) -> None:
    """Fail with the list of :func:`problems` (full parse) unless ``data`` conforms."""
    found = problems(data, rcpt_tos=rcpt_tos, smtputf8=smtputf8)
    assert not found, "message does not conform on the wire:\n  " + "\n  ".join(found)
