"""The longest personal values a real subscriber can have, for the size-limit tests.

Written out as values (not taken from the code under test): a name and attributes of quotes
(each grows to 6 bytes once HTML-escaped), the longest valid address with a local part of
quotes, and an unsubscribe link with a 120-character token.
"""

from __future__ import annotations

import html
import re

from newsletter.personalization import MAX_ATTR_CHARS, MAX_NAME_CHARS, TokenSet

NAME = "'" * MAX_NAME_CHARS
ATTR = '"' * MAX_ATTR_CHARS
EMAIL = "'" * 64 + "@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 57 + ".org"
TOKEN = "x" * 120
assert len(EMAIL) == 254


def unsubscribe_url(base_url: str) -> str:
    return f"{base_url}/unsubscribe/{TOKEN}"


def values(base_url: str) -> dict[str, str]:
    return {"name": NAME, "email": EMAIL, "unsubscribe_url": unsubscribe_url(base_url)}


def fill(text: str, tokens: TokenSet, *, base_url: str, escaped: bool) -> str:
    """``text`` with every token replaced by the longest value, as the message stage would."""
    longest = values(base_url)

    def value(match: re.Match[str]) -> str:
        raw = longest.get(match.group(1), ATTR)
        return html.escape(raw, quote=True) if escaped else raw

    return tokens.pattern.sub(value, text)


def size(text: str) -> int:
    return len(text.encode("utf-8"))
