"""Small text helpers shared by every stage: whitespace, shortening, URLs, HTML to one line.

One home, one rule each: the sources, the render stage and the error messages all call these,
so a title is collapsed and cut the same way wherever it comes from.
"""

from __future__ import annotations

import html
import re
from typing import TypeGuard
from urllib.parse import urlsplit

import nh3

ELLIPSIS = "…"

# Tags whose content is never text a reader should see: dropped whole, not unwrapped.
NON_TEXT_TAGS = frozenset(
    {
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet",
        "noscript", "template", "form", "button", "select", "textarea", "svg", "math",
        "head", "title",
    }
)  # fmt: skip
# Block-level tags that separate words when HTML is flattened to one line.
_WORD_BREAK_TAGS = frozenset(
    {
        "p", "br", "hr", "div", "li", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre",
        "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "th", "td", "caption",
        "figure", "figcaption", "section", "article", "header", "footer", "aside", "img",
    }
)  # fmt: skip

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Invisible characters scrapers leave in text: BOMs, zero-width spaces, soft hyphens.
_INVISIBLE = re.compile("[\ufeff\u200b\u2060\u00ad]")
_ANY_TAG = re.compile(r"</?[a-z0-9]+>")
# What a shortened text should not end with before its ellipsis.
_DROP_BEFORE_ELLIPSIS = " ,;:.·-–—/([{“‘\"'"


def collapse(text: str) -> str:
    """Every run of whitespace (CR, LF, tabs, NBSP, Unicode spaces) and control chars -> one
    space, invisible characters (BOM, zero-width space, soft hyphen) removed, ends stripped."""
    return " ".join(_CONTROL_CHARS.sub(" ", _INVISIBLE.sub("", text)).split())


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut at a word boundary with an ellipsis.

    Only a single word longer than the limit is cut inside; punctuation and opening brackets
    left dangling before the ellipsis are dropped.
    """
    if len(text) <= limit:
        return text
    cut = cut_at_word(text, limit - 1)
    kept = cut.rstrip(_DROP_BEFORE_ELLIPSIS)
    return (kept or cut) + ELLIPSIS


def cut_at_word(text: str, limit: int) -> str:
    """The longest start of ``text`` within ``limit`` characters that ends between words;
    a first word longer than ``limit`` is cut inside."""
    cut = text[: max(limit, 0)]
    if len(text) > len(cut) and not text[len(cut)].isspace():
        head, space, _ = cut.rpartition(" ")
        if space and head.strip():
            cut = head
    return cut


def clip(text: str, limit: int = 40) -> str:
    """``text`` on one line, hard-cut to ``limit`` characters: for quoting input in messages."""
    line = collapse(text)
    return line if len(line) <= limit else line[: limit - 1] + ELLIPSIS


def is_http_url(value: object) -> TypeGuard[str]:
    """True for an absolute http(s) URL with a host and no whitespace inside."""
    if not isinstance(value, str):
        return False
    url = value.strip()
    if not url or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def html_to_line(html_text: str) -> str:
    """The plain text of an HTML fragment on one line: tags stripped, entities decoded.

    Block-level tags become spaces so that paragraphs do not run into each other; inline tags
    vanish without one ("H<sub>2</sub>O" stays "H2O"); scripts and styles are dropped whole.
    For wrapped, laid-out text see :func:`newsletter.render_text.html_to_text`.
    """
    skeleton = nh3.clean(
        html_text,
        tags=set(_WORD_BREAK_TAGS),
        clean_content_tags=set(NON_TEXT_TAGS),
        attributes={},
        link_rel=None,
        strip_comments=True,
    )
    return collapse(html.unescape(_ANY_TAG.sub(" ", skeleton)))
