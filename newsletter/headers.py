"""Header fields as they go on the wire: cleaned values, encoded-words, folding, addresses.

Every header field written here keeps to these rules (``tests/wire.py`` checks them on every
message the tests capture):

- Values are cleaned first (:func:`clean_text`): control characters, bidi marks, overrides
  and isolates and zero-width characters are removed, runs of whitespace become one space.
- Lines are folded at spaces to at most ``LINE`` (76) characters, the field name included:
  within RFC 5322's 78, and within RFC 2047's 76 for lines that carry encoded-words. Only a
  token that no space can split (a long address, URL or word) makes a longer line, far below
  the 998-octet limit.
- Text that is not printable ASCII goes into ``=?utf-8?b?...?=`` encoded-words of at most 75
  characters (RFC 2047), each holding whole characters. A run of such text longer than one
  encoded-word becomes adjacent encoded-words; the whitespace between them is not part of the
  text (RFC 2047 section 6.2).
- Addresses are written in the form that can be sent (:func:`wire_address`): an
  internationalized domain in A-labels (punycode); a non-ASCII local part as UTF-8, which
  only a server offering SMTPUTF8 takes.
"""

from __future__ import annotations

import base64
import functools
import re
from urllib.parse import quote, urlsplit, urlunsplit

import idna

LINE = 76
MAX_ENCODED_WORD = 75
CRLF = "\r\n"
_EW_HEAD = "=?utf-8?b?"
_EW_OVERHEAD = len(_EW_HEAD) + len("?=")
_MIN_EW = _EW_OVERHEAD + 8  # room for one character of up to 4 bytes (two base64 quanta)

# Removed from header values (whitespace characters become spaces instead): C0 and C1 controls
# (NUL, ESC, ...), DEL, the bidi marks, embeddings, overrides and isolates, zero-width spaces
# and joiners of words, the byte-order mark, and lone surrogates.
_REMOVED = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"
    "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]+"
)
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"  # RFC 5322 atext
_ATEXT = re.compile(_ATOM)
_ATEXT_PHRASE = re.compile(f"{_ATOM}(?: {_ATOM})*")


def clean_text(value: str, limit: int | None = None) -> str:
    """``value`` as one line: invisible and control characters removed, whitespace runs as one
    space, no space at either end, cut to ``limit`` characters."""
    if not (value.isascii() and value.isprintable()) or "  " in value:
        value = " ".join(_REMOVED.sub("", value).split())
    else:
        value = value.strip(" ")
    if limit is not None and len(value) > limit:
        value = value[:limit].rstrip(" ")
    return value


class UnsendableAddress(ValueError):
    """An address that cannot be written on the wire (its domain is not a valid IDN)."""


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """The domain in A-labels (IDNA 2008 with UTS 46 mapping); ``UnsendableAddress`` if invalid."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise UnsendableAddress(
            f"the domain {domain!r} is not a valid internationalized domain name ({exc})"
        ) from None


def wire_address(address: str) -> tuple[str, bool]:
    """The address as sent, and whether sending it needs SMTPUTF8.

    ASCII addresses are sent as they are; an internationalized domain with an ASCII local part
    in A-labels (``x@bücher.de`` -> ``x@xn--bcher-kva.de``, any server takes it); an address
    with a non-ASCII local part as it is, in UTF-8, which needs SMTPUTF8.
    """
    if address.isascii():
        return address, False
    local, at, domain = address.rpartition("@")
    if not (at and local and domain):
        raise UnsendableAddress(f"{address!r} is not an email address")
    ascii_form = ascii_domain(domain)  # also checks a domain kept in Unicode below
    if local.isascii():
        return f"{local}@{ascii_form}", False
    return address, True


def ascii_url(url: str) -> str:
    """A URL that fits in a header: an IDN host in A-labels, other non-ASCII percent-encoded."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    netloc = f"{userinfo}{at}{ascii_domain(host) if host else ''}{colon}{port}"
    safe = "/?#[]@!$&'()*+,;=:%~"
    return urlunsplit(
        (
            parts.scheme,
            quote(netloc, safe=safe),
            quote(parts.path, safe=safe),
            quote(parts.query, safe=safe),
            quote(parts.fragment, safe=safe),
        )
    )


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class _Field:
    """One header field being written: tokens joined by single spaces, folded at ``LINE``
    octets (a UTF-8 address counts in octets, RFC 6532)."""

    def __init__(self, name: str) -> None:
        self.done: list[str] = []
        self.line = name + ":"
        self.width = len(self.line)
        self.empty = True  # nothing on the current line after the field name

    def fold(self) -> None:
        self.done.append(self.line)
        self.line = ""
        self.width = 0
        self.empty = True

    def add(self, token: str) -> None:
        width = _octets(token)
        if not self.empty and self.width + 1 + width > LINE:
            self.fold()
        self.line += " " + token
        self.width += 1 + width
        self.empty = False

    def add_encoded(self, text: str) -> None:
        """``text`` as encoded-words, each sized to the room left on its line."""
        data = text.encode("utf-8")
        start = 0
        while start < len(data):
            room = LINE - self.width - 1
            if room < _MIN_EW and not self.empty:
                self.fold()
                room = LINE - 1
            size = (min(room, MAX_ENCODED_WORD) - _EW_OVERHEAD) // 4 * 3
            end = min(start + size, len(data))
            while end < len(data) and data[end] & 0xC0 == 0x80:  # never split a character
                end -= 1
            word = f"{_EW_HEAD}{base64.b64encode(data[start:end]).decode('ascii')}?="
            self.line += " " + word
            self.width += 1 + len(word)
            self.empty = False
            start = end

    def render(self) -> str:
        return CRLF.join([*self.done, self.line])


def _plain(word: str) -> bool:
    return word.isascii() and word.isprintable() and "=?" not in word


def _add_words(field: _Field, text: str, *, phrase: bool) -> None:
    """Plain ASCII words as they are (in a phrase: atoms, or quoted when they need it), runs
    of other words as encoded-words."""
    words = text.split(" ")
    i = 0
    while i < len(words):
        j = i
        plain = _plain(words[i])
        while j < len(words) and _plain(words[j]) == plain:
            j += 1
        run = words[i:j]
        i = j
        if not plain:
            field.add_encoded(" ".join(run))
        elif not phrase or all(_ATEXT.fullmatch(w) for w in run):
            for word in run:
                field.add(word)
        else:  # one quoted-string, foldable at its spaces (unfolding restores them)
            quoted = [w.replace("\\", "\\\\").replace('"', '\\"') for w in run]
            quoted[0] = '"' + quoted[0]
            quoted[-1] += '"'
            for word in quoted:
                field.add(word)


def text_field(name: str, value: str) -> str:
    """An unstructured field (``Subject``): ``value`` must be clean (:func:`clean_text`)."""
    if _plain(value) and len(name) + 2 + len(value) <= LINE:
        return f"{name}: {value}"
    field = _Field(name)
    if value:
        _add_words(field, value, phrase=False)
    return field.render()


def mailbox_field(name: str, display_name: str, address: str) -> str:
    """``Name: display name <address>``; the name must be clean, the address a wire address."""
    if not display_name:
        return f"{name}: {address}"  # one token: nothing to fold
    if (
        address.isascii()
        and len(name) + len(display_name) + len(address) + 5 <= LINE
        and _ATEXT_PHRASE.fullmatch(display_name)
        and "=?" not in display_name
    ):
        return f"{name}: {display_name} <{address}>"
    field = _Field(name)
    _add_words(field, display_name, phrase=True)
    field.add(f"<{address}>")
    return field.render()


def tokens_field(name: str, tokens: list[str]) -> str:
    """A field of tokens that are never split (``List-Unsubscribe: <url>, <mailto:...>``)."""
    field = _Field(name)
    for token in tokens:
        field.add(token)
    return field.render()
