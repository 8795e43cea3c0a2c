"""Read the article collector's plain-text format (``.txt``), as scrapers really write it.

A scraped file looks like::

     date 2026-02-07 Sign up now: Get our newsletters    <- anything after the date is page junk

    A lineworker repairs a cable ... AGENCY/Jane Roe      <- a photo caption: dropped

    ROTTERDAM, Nov 21 (Reuters) - Crews restored ...     <- the dateline: stripped

    "We are working around the clock," ... REUTERS       <- the agency credit: Article.source

Paragraphs are separated by blank lines. The reader copes with what scrapers leave behind:
leading and trailing whitespace, a byte order mark, CR or CRLF line ends, tabs, non-breaking
and zero-width spaces anywhere, captions (``REUTERS/Name/File Photo``, ``AP Photo/Name``,
``(not pictured)``), ``(Reporting by ...)`` lines, sign-up prompts and separator lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from newsletter.errors import ArticleError
from newsletter.sources.base import Draft, Identity
from newsletter.text import clip, collapse

# `NNN_<id>.txt`: the part after the first underscore is the collector's stable id.
_NUMBERED_NAME_RE = re.compile(r"\d+_(?P<id>.+)")
_DATE_LINE_RE = re.compile(r"date(?:[\s:]+|(?=\d))(?P<value>\S+)", re.IGNORECASE)
_ISO_DATE_RE = re.compile(r"(?P<iso>\d{4}-\d{2}-\d{2})(?!\d)")

_UPPER = "A-ZÀ-ÖØ-Þ"
# A photo credit closing a caption: `AGENCY/Jane Roe`, `(AP Photo/J. Doe)`,
# `REUTERS/Jane Roe/File Photo`.
_NAME_WORD = r"[^\W\d_][\w.'’\-]*"
_PHOTO_CREDIT_RE = re.compile(
    rf"(?:^|\s)\(?[{_UPPER}][{_UPPER}&\-]+(?: Photo)?/"
    rf"(?P<name>{_NAME_WORD}(?: {_NAME_WORD}){{0,4}})"
    rf"(?:/{_NAME_WORD}(?: {_NAME_WORD}){{0,2}})*\)?\s*$"
)
_NOT_PICTURED = "(not pictured)"

_MONTH = (
    r"(?:Jan(?:uary|\.)?|Feb(?:ruary|\.)?|Mar(?:ch|\.)?|Apr(?:il|\.)?|May|June?|July?"
    r"|Aug(?:ust|\.)?|Sep(?:tember|t\.|\.)?|Oct(?:ober|\.)?|Nov(?:ember|\.)?|Dec(?:ember|\.)?)"
)
_DAY = _MONTH + r"\s+\d{1,2}(?:,\s*\d{4})?"
_AGENCY = r"\s*\([^()]{1,40}\)"
# `ROTTERDAM`, `SAO PAULO/LONDON`, `ST. PETERSBURG, Florida`
_PLACE = rf"[{_UPPER}][{_UPPER} .'’/\-]*(?:,\s+[{_UPPER}][\w.'’\-]*(?: [{_UPPER}][\w.'’\-]*)?)?"
# `Feb 6 - `, `ROTTERDAM, Nov 21 (Reuters) - `, `LVIV (Reuters) — `, `KYIV — `; never eats
# `June 1 - 3` (a number follows the dash).
_DATELINE_RE = re.compile(
    rf"(?:(?:{_PLACE},\s+)?{_DAY}(?:{_AGENCY})?|{_PLACE}{_AGENCY}|[{_UPPER}]{{3,}})"
    r"\s*[-–—]{1,2}\s+(?=\D)"
)
# An agency credit ending the last paragraph after the final sentence: `... said. AGENCY`.
_CREDIT_RE = re.compile(
    rf"(?:^|(?<=[.!?\"”’)])\s+)(?P<credit>[{_UPPER}]{{2,}}(?:[-/ ][{_UPPER}]{{2,}}){{0,2}})$"
)
# Page furniture that ends up between paragraphs: `(Reporting by X; Editing by Y)`, sign-up
# prompts, `Advertisement`.
_JUNK_PARAGRAPH_RE = re.compile(
    r"\((?:Additional )?(?:Reporting|Writing|Editing) by [^()]*\)"
    r"|(?:Additional )?(?:Reporting|Writing) by [^.;]*; Editing by [^.;]*\.?"
    r"|(?:Sign up|Subscribe)\b.{0,120}\b(?:newsletters?|briefings?|inbox|alerts)\b.{0,80}"
    r"|Advertisement|Scroll to continue with content",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ScrapedTextReader:
    """The reader for ``.txt`` files: the collector's scraped text."""

    extensions: tuple[str, ...] = (".txt",)
    description: str = "scraped text"

    def read(self, text: str, path: Path) -> Draft:
        """A Draft from the text of a scraped file; ``ArticleError`` if it is unusable."""
        return parse_scraped(text, path)


def parse_scraped(text: str, path: Path) -> Draft:
    """A Draft from the text of a scraped ``.txt`` file; raise ArticleError if unusable."""
    lines = text.splitlines()
    first = next((n for n, line in enumerate(lines) if collapse(line)), None)
    if first is None:
        raise ArticleError(f"{path}: file is empty; expected 'date YYYY-MM-DD' on line 1")
    published = _parse_date_line(collapse(lines[first]), first + 1, path)
    paragraphs = [p for p in _paragraphs(lines[first + 1 :]) if not _is_junk(p)]
    kept = [p for p in paragraphs if not is_photo_caption(p)]
    paragraphs = kept or paragraphs  # a caption alone is still the only text there is
    source = None
    if paragraphs:
        paragraphs[0] = strip_dateline(paragraphs[0])
        paragraphs[-1], source = split_credit(paragraphs[-1])
        paragraphs = [p for p in paragraphs if _has_words(p)]
    if not paragraphs:
        raise ArticleError(
            f"{path}: no article text after the date line on line {first + 1}; "
            "add the article's paragraphs separated by blank lines"
        )
    return Draft(
        identity=Identity(file_id=file_id(path)),
        published=published,
        origin=str(path),
        paragraphs=tuple(paragraphs),
        source=source,
    )


def file_id(path: Path) -> str:
    """The collector's id of a ``NNN_<id>.txt`` file; the name without extension otherwise."""
    match = _NUMBERED_NAME_RE.fullmatch(path.stem)
    return match["id"] if match else path.stem


def _parse_date_line(line: str, number: int, path: Path) -> datetime:
    expected = "expected 'date YYYY-MM-DD'"
    match = _DATE_LINE_RE.match(line)
    if match is None:
        raise ArticleError(f"{path}: line {number}: {expected}, got {clip(line)!r}")
    value = match["value"]
    iso = _ISO_DATE_RE.match(value)
    if iso is None:
        raise ArticleError(f"{path}: line {number}: bad date {clip(value)!r}, {expected}")
    try:
        day = date.fromisoformat(iso["iso"])
    except ValueError as exc:
        reason = f"bad date {iso['iso']!r} ({exc})"
        raise ArticleError(f"{path}: line {number}: {reason}, {expected}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _paragraphs(lines: list[str]) -> list[str]:
    """Group lines into paragraphs at blank lines, collapsing whitespace inside each."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        text = collapse(line)
        if text:
            current.append(text)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


def _has_words(paragraph: str) -> bool:
    return any(c.isalnum() for c in paragraph)


def _is_junk(paragraph: str) -> bool:
    """Separator lines (`* * *`) and page furniture (`Sign up now ...`, `(Reporting by ...)`)."""
    return not _has_words(paragraph) or _JUNK_PARAGRAPH_RE.fullmatch(paragraph) is not None


def is_photo_caption(paragraph: str) -> bool:
    """True if the paragraph ends in a photo credit (``AGENCY/Jane Roe``) or says not pictured."""
    if _NOT_PICTURED in paragraph:
        return True
    match = _PHOTO_CREDIT_RE.search(paragraph)
    # A person's name has lower-case letters; `AC/DC` is not a photo credit.
    return match is not None and any(c.islower() for c in match["name"])


def strip_dateline(paragraph: str) -> str:
    """Remove a leading dateline such as ``March 13 - `` from the lead paragraph."""
    match = _DATELINE_RE.match(paragraph)
    return paragraph[match.end() :] if match else paragraph


def split_credit(paragraph: str) -> tuple[str, str | None]:
    """Split a trailing agency credit (``... said. AGENCY``) off the last paragraph."""
    match = _CREDIT_RE.search(paragraph)
    if match is None:
        return paragraph, None
    return paragraph[: match.start()].rstrip(), match["credit"]
