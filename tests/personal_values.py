"""Hypothesis strategies for what subscribers and operators type, and the documented cleaning.

The cleaning here is written from the README's words, not from the code: whitespace of any
kind becomes a space, control characters and the invisible direction and zero-width marks go,
runs of spaces become one, nothing at either end, names cut to ``MAX_NAME_CHARS``.
"""

from __future__ import annotations

import unicodedata

import idna
from hypothesis import strategies as st

INVISIBLE = frozenset(
    "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)
TRICKY = [
    "Zoë <b>Müller</b>",
    "Ada\r\nBcc: victim@example.org",
    "\x1b[31mred\x1b[0m",
    "\u202egnp.exe",
    "\u2066isolated\u2069",
    "=?utf-8?q?not_encoded?=",
    '"quoted" and \\back\\slashed',
    "Smith, John (Dr.)",
    "田中太郎" * 30,
    "Александр Сергеевич Пушкин",
    "\u00a0\u3000 spaced\u2028out\u2029 ",
    "x" * 150,
    "emoji 👩‍👩‍👧‍👦 family",
    "NUL\x00inside",
]


def documented_cleaning(value: str, limit: int | None = None) -> str:
    """What a value looks like after the cleaning the README documents."""
    kept = "".join(
        " "
        if char.isspace()
        else ""
        if unicodedata.category(char) in ("Cc", "Cs") or char in INVISIBLE
        else char
        for char in value
    )
    text = " ".join(kept.split())
    if limit is not None:
        text = text[:limit].rstrip(" ")
    return text


names = st.one_of(st.sampled_from(TRICKY), st.text(max_size=250))
attr_values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=300))
titles = st.one_of(st.sampled_from(TRICKY), st.text(min_size=1, max_size=200))

_ASCII_LOCAL = st.from_regex(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[a-z0-9_-]{1,10}){0,2}", fullmatch=True
)
_QUOTED_LOCAL = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
_UNICODE_LOCAL = st.text(
    alphabet=st.characters(categories=["Ll", "Lu", "Lo", "Nd"]), min_size=1, max_size=12
)
_IDN_LABELS = ["bücher", "münchen", "例え", "ελληνικά", "яндекс", "مثال", "straße", "日本語"]
_LABEL = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True),
    st.sampled_from(_IDN_LABELS),
    st.text(alphabet=st.characters(categories=["Ll", "Lo"]), min_size=1, max_size=8),
)
_DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_LABEL, min_size=1, max_size=2),
    st.sampled_from(["org", "de", "jp", "com"]),
)
addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.one_of(_ASCII_LOCAL, _QUOTED_LOCAL, _UNICODE_LOCAL),
    _DOMAIN,
)


def valid_domain(domain: str) -> bool:
    """Whether ``domain`` has an A-label form (IDNA 2008 with UTS 46 mapping)."""
    try:
        idna.encode(domain, uts46=True)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def expected_wire_address(address: str) -> tuple[str, bool] | None:
    """How the README says an address is sent: ``(address, needs SMTPUTF8)``, or None when
    its domain has no A-label form (the delivery fails)."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii() and not valid_domain(domain):
        return None
    if local.isascii():
        return f"{local}@{idna.encode(domain, uts46=True).decode()}", False
    return address, True
