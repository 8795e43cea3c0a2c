"""What a subscriber record may hold, checked on the way in: address, name, attributes.

Addresses are stored in one normalized form, so that uniqueness holds whatever the case or
spelling: the local part lowercased (``str.lower``) and NFC-normalized, non-ASCII allowed
(SMTPUTF8); the domain in its Unicode form (U-labels, ``bücher.de`` also for
``xn--bcher-kva.de``), lowercased and NFC. The delivery stage converts the domain to its
A-label (punycode) form on the wire.

Names and attribute values come from CSV files and a public form: control characters (C0,
C1, DEL), bidi overrides and isolates and other invisible format characters are removed,
whitespace is collapsed, and the length is capped (``MAX_NAME_CHARS``, ``MAX_ATTR_CHARS``).
A name typed into the public sign-up form is held to more (:func:`signup_name`): it goes into
an email to an address nobody has checked yet, so it must not carry links or hidden text.
"""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import SubscriberError
from newsletter.personalization import MAX_ATTR_CHARS, MAX_EMAIL_CHARS, MAX_NAME_CHARS

# Joiners are format characters too, but Persian, Indic scripts and emoji sequences need them.
_KEPT_FORMAT = frozenset("\u200c\u200d")
_INVISIBLE = frozenset(("Cc", "Cf", "Cs"))  # controls, format (bidi etc.), lone surrogates
_SHOWN_IN_ERRORS = 80


def _is_invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE and char not in _KEPT_FORMAT


def clean_text(raw: str, limit: int) -> str:
    """One line of visible text: invisible characters removed, whitespace collapsed, capped."""
    if not (raw.isascii() and raw.isprintable()):
        raw = "".join(" " if c.isspace() else c for c in raw if c.isspace() or not _is_invisible(c))
        raw = unicodedata.normalize("NFC", " ".join(raw.split()))
    else:
        raw = " ".join(raw.split())
    return raw[:limit].rstrip()


def clean_name(raw: str) -> str:
    """A display name safe for headers and terminals, at most ``MAX_NAME_CHARS`` characters."""
    return clean_text(raw, MAX_NAME_CHARS)


def clean_attr(raw: str) -> str:
    """An attribute value (a CSV column), at most ``MAX_ATTR_CHARS`` characters."""
    return clean_text(raw, MAX_ATTR_CHARS)


def printable(value: str) -> str:
    """``value`` for a terminal: control and format characters shown as escapes, not run."""
    if value.isprintable():
        return value
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in value
    )


def normalize_address(raw: str) -> str:
    """The one stored form of an address (see the module doc); ``SubscriberError`` if invalid."""
    candidate = raw.strip()
    cut = len(candidate) > _SHOWN_IN_ERRORS
    shown = "'" + printable(candidate[:_SHOWN_IN_ERRORS]) + ("...'" if cut else "'")
    if len(candidate) > 4 * MAX_EMAIL_CHARS:  # not worth validating
        raise SubscriberError(f"{shown} is not a valid email address: it is far too long")
    try:
        result = validate_email(
            unicodedata.normalize("NFC", candidate).lower(),
            check_deliverability=False,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        raise SubscriberError(f"{shown} is not a valid email address: {exc}") from None
    return unicodedata.normalize("NFC", result.normalized.lower())


MAX_SIGNUP_NAME_CHARS = 60
# What makes a name a vehicle for spam: a scheme or "www.", or a token shaped like a domain
# ("example.com", "пример.рф", also inside an address). "Dr. Who" and "J.R.R. Tolkien" pass.
_LINK_LIKE = re.compile(
    r"https?|www\.|://|[^\W_](?:[\w-]*[^\W_])?\.[^\W\d_]{2,}(?![\w-])", re.IGNORECASE
)
_LINE_BREAKS = frozenset("\u2028\u2029")


def signup_name(raw: str) -> str:
    """A name from the public sign-up form, or ``SubscriberError`` saying what to change.

    At most ``MAX_SIGNUP_NAME_CHARS`` characters, no control or invisible characters, nothing
    that reads as a link or a domain: it is put into the greeting and the ``To`` field of a
    confirmation email to an address nobody has checked yet.
    """
    name = clean_name(raw)
    if any(_is_invisible(c) or c in _LINE_BREAKS for c in raw) or not all(
        c.isprintable() or c in _KEPT_FORMAT for c in name
    ):  # also unassigned and private-use code points: nobody can see what they show
        raise SubscriberError("the name may not contain control or invisible characters")
    if len(name) > MAX_SIGNUP_NAME_CHARS:
        raise SubscriberError(f"the name is too long (at most {MAX_SIGNUP_NAME_CHARS} characters)")
    if _LINK_LIKE.search(name):
        raise SubscriberError("the name may not contain web addresses or domain names")
    return name
