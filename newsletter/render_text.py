"""Plain-text helpers for the render stage, registered as Jinja filters and tests.

Wrapping never breaks a word, so URLs and personalization tokens stay whole even when
they are longer than the line.
"""

from __future__ import annotations

import re
import textwrap
from datetime import datetime

from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_document_state import HtmlDocumentState
from inscriptis.model.tag import CustomHtmlTagHandlerMapping

# One home for these (newsletter.text); re-exported for the filters and templates here.
from newsletter.text import collapse, truncate
from newsletter.text import is_http_url as is_web_url

__all__ = ["collapse", "html_to_text", "is_web_url", "long_date", "tidy", "truncate", "wrap"]

WIDTH = 76

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_EXTRA_BLANK_LINES = re.compile(r"\n{3,}")
# Leading indent and an optional list marker ("* ", "- ", "1. ") as inscriptis writes them.
_LINE_START = re.compile(r"^([ \t]*)((?:[*+\-•]|\d+[.)])[ \t]+)?")
# A link whose text is its own address ("x@y.org (mailto:x@y.org)"): the address once is enough.
_SELF_LINK = re.compile(r"(?<!\S)(\S+) \((?:mailto:)?\1\)")


def wrap(text: str, width: int = WIDTH, indent: str = "", first_indent: str | None = None) -> str:
    """Wrap each paragraph (paragraphs are separated by blank lines) at ``width`` columns.

    Line breaks inside a paragraph are joined. ``first_indent`` replaces ``indent`` on the
    first line of the first paragraph (e.g. a list number).
    """
    paragraphs = [collapse(p) for p in _PARAGRAPH_BREAK.split(str(text))]
    lines: list[str] = []
    for paragraph in filter(None, paragraphs):
        initial = indent if lines or first_indent is None else first_indent
        lines.append(_fill(paragraph, width, initial, indent))
    return "\n\n".join(lines)


def html_to_text(html: str, width: int = WIDTH, indent: str = "") -> str:
    """Sanitized article HTML -> wrapped plain text (inscriptis keeps lists and headings)."""
    text = get_text(str(html), _TEXT_LINKS).replace("\xa0", " ")
    text = _SELF_LINK.sub(r"\1", text)
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            lines.append("")
            continue
        start = _LINE_START.match(line)
        assert start is not None  # the pattern matches the empty prefix
        lead, marker = start.group(1), start.group(2) or ""
        body = collapse(line[start.end() :])
        first = indent + lead + marker
        lines.append(_fill(body, width, first, " " * len(first)))
    return _EXTRA_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def _link_start(state: HtmlDocumentState, attrs: dict[str, str]) -> None:
    state.link_target = attrs.get("href", "")


def _link_end(state: HtmlDocumentState) -> None:
    if state.link_target:
        state.tags[-1].write(f" ({state.link_target})")


# Links read as "the text (https://...)", not Markdown's [text](url).
_TEXT_LINKS = ParserConfig(
    custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
        start_tag_mapping={"a": _link_start}, end_tag_mapping={"a": _link_end}
    )
)


def long_date(value: datetime) -> str:
    """``26 November 2026`` (no leading zero)."""
    return f"{value.day} {value:%B %Y}"


def tidy(text: str) -> str:
    """Strip trailing spaces, keep at most one blank line in a row, end with one newline."""
    lines = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return _EXTRA_BLANK_LINES.sub("\n\n", lines) + "\n"


def _fill(text: str, width: int, initial: str, subsequent: str) -> str:
    return textwrap.fill(
        text,
        width,
        initial_indent=initial,
        subsequent_indent=subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )
