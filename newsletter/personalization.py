"""Sentinel tokens that stand for a recipient's personal fields in the rendered digest.

The digest is rendered and CSS-inlined once with tokens in place of the personal fields;
the message stage substitutes real values per recipient. Tokens are plain ``[A-Za-z0-9_]``
so premailer, HTML escaping and URL quoting leave them intact, and they carry a random
per-digest nonce so article text cannot forge one.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

# Fields every template may use on ``subscriber``; custom CSV columns are ``subscriber.attrs.X``.
BUILTIN_FIELDS = ("name", "email", "unsubscribe_url")
# The personal link of a confirmation email (in place of ``unsubscribe_url``).
CONFIRM_URL_FIELD = "confirm_url"
ATTR_PREFIX = "attr_"
# Longest personal values a subscriber can have. Input is cut to these on the way in, and the
# render stage sizes the digest for them, so no subscriber's copy can outgrow the size limit.
MAX_NAME_CHARS = 100
MAX_ATTR_CHARS = 200
MAX_EMAIL_CHARS = 254  # RFC 5321: a path is at most 256 octets including the angle brackets
MAX_LOCAL_PART_OCTETS = 64  # RFC 5321, enforced by the address validation
# An unsubscribe (or confirm) URL is ``[web] base_url`` followed by at most this many characters
# (the path and a signed token of at most ~120 characters); the links stage keeps within it.
MAX_UNSUBSCRIBE_SUFFIX_CHARS = 160
# The most bytes one character of a value can take: 4 in UTF-8, 6 once HTML-escaped
# (' -> &#x27;, " -> &quot;).
_MAX_CHAR_BYTES = 4
_MAX_ESCAPED_CHAR_BYTES = 6
_ATTR_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def attr_key(name: str) -> str:
    """Normalize a CSV column name into an attribute key usable as ``subscriber.attrs.KEY``."""
    key = re.sub(r"[^A-Za-z0-9_]+", "_", name.strip()).strip("_").lower()
    return key[:64]


@dataclass(frozen=True)
class TokenSet:
    """Tokens for one digest: ``NL`` and 12 random hex digits, then ``Q<field>Q``.

    ``token('name')`` -> ``NL3f9a0c1b2d4eQnameQ``; an attribute's field is ``attr_<key>``.
    """

    nonce: str = field(default_factory=lambda: "NL" + secrets.token_hex(6))

    def token(self, field_name: str) -> str:
        return f"{self.nonce}Q{field_name}Q"

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.nonce) + r"Q([A-Za-z0-9_]+?)Q")

    def placeholder(self) -> SubscriberPlaceholder:
        """The object templates see as ``subscriber`` while the digest is rendered once."""
        return SubscriberPlaceholder(self)


class _AttrPlaceholders(Mapping[str, str]):
    def __init__(self, tokens: TokenSet) -> None:
        self._tokens = tokens

    def __getitem__(self, key: str) -> str:
        if not _ATTR_KEY.match(key):
            raise KeyError(key)
        return self._tokens.token(ATTR_PREFIX + key.lower())

    def __getattr__(self, key: str) -> str:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class SubscriberPlaceholder:
    """Stands in for a subscriber in templates: every field renders as its token."""

    def __init__(self, tokens: TokenSet) -> None:
        self.name = tokens.token("name")
        self.email = tokens.token("email")
        self.unsubscribe_url = tokens.token("unsubscribe_url")
        self.attrs = _AttrPlaceholders(tokens)


def longest_value_bytes(field_name: str, *, base_url: str, escaped: bool) -> int:
    """The most bytes a subscriber's value for ``field_name`` can take in a sent message.

    ``escaped`` is for the HTML part, where values are HTML-escaped; the text part has them raw.
    """
    per_char = _MAX_ESCAPED_CHAR_BYTES if escaped else _MAX_CHAR_BYTES
    if field_name == "name":
        return MAX_NAME_CHARS * per_char
    if field_name == "email":
        # Only the local part can hold characters that HTML-escaping grows (' and &).
        escapable = MAX_LOCAL_PART_OCTETS if escaped else 0
        return escapable * per_char + (MAX_EMAIL_CHARS - escapable) * _MAX_CHAR_BYTES
    if field_name in ("unsubscribe_url", CONFIRM_URL_FIELD):
        base = html.escape(base_url, quote=True) if escaped else base_url
        return len(base.encode("utf-8")) + MAX_UNSUBSCRIBE_SUFFIX_CHARS * per_char
    return MAX_ATTR_CHARS * per_char  # attr_<key>, and anything unknown


def worst_case_size(text: str, tokens: TokenSet, *, base_url: str, escaped: bool) -> int:
    """Bytes of ``text`` (UTF-8) once every token in it holds the longest value it can hold."""
    size = len(text.encode("utf-8"))
    for match in tokens.pattern.finditer(text):
        longest = longest_value_bytes(match.group(1), base_url=base_url, escaped=escaped)
        size += longest - len(match.group(0))
    return size
