"""What a subscriber record may hold, checked on the way in: address, name, attributes.

Addresses are stored in one normalized form, so that uniqueness holds whatever the case or
spelling: the local part lowercased (``str.lower``) and NFC-normalized, non-ASCII allowed
(SMTPUTF8); the domain in its Unicode form (U-labels, ``bücher.de`` also for
``xn--bcher-kva.de``), lowercased and NFC. The delivery stage converts the domain to its
A-label (punycode) form on the wire.

Names and attribute values come from CSV files and a public form: control characters (C0,
C1, DEL), bidi overrides and isolates and other invisible format characters are removed,
whitespace is collapsed, and the length is capped (``MAX_NAME_CHARS``, ``MAX_ATTR_CHARS``).
"""

from __future__ import annotations

import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import SubscriberError
from newsletter.models import SubscriberState
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


def why_not_added(address: str, state: SubscriberState) -> str:
    """Why an address already on the list is not added (again) by ``add`` or an import."""
    if state is SubscriberState.UNSUBSCRIBED:
        return (
            f"{address} unsubscribed earlier and is never re-added silently; "
            "use --double-opt-in so they confirm themselves"
        )
    if state is SubscriberState.BOUNCED:
        return (
            f"{address} bounced earlier; use --double-opt-in to check the address with a "
            "confirmation email"
        )
    return f"{address} is already on the list ({state.value})"
