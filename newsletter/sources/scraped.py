"""Parse the article collector's plain-text format, and derive titles and summaries from text.

A scraped file looks like::

    date 2026-03-14 Subscribe to our morning briefing   <- anything after the date is page junk

    A lineworker repairs a cable ... AGENCY/Jane Roe    <- optional photo caption: dropped

    March 13 - Crews restored power to ...              <- optional dateline: stripped

    "We are working around the clock," ... AGENCY       <- optional agency credit: Article.source

Paragraphs are separated by blank lines; whitespace inside a paragraph is collapsed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

from newsletter.errors import ArticleError
from newsletter.models import Article

TITLE_MAX_CHARS = 90
SUMMARY_MAX_CHARS = 300
ELLIPSIS = "…"

# `NNN_<id>.txt`: the part after the first underscore is the article's stable id.
_NUMBERED_NAME_RE = re.compile(r"\d+_(?P<id>.+)")
_DATE_LINE_RE = re.compile(r"date[ \t]+(?P<value>\S+)")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# A photo credit closing a caption: `AGENCY/Jane Roe`, `AP Photo/J. Doe/File Photo`.
_NAME_WORD = r"[^\W\d_][\w.'’\-]*"
_PHOTO_CREDIT_RE = re.compile(
    rf"(?:^|\s)[A-Z][A-Z&\-]+(?: Photo)?/(?P<name>{_NAME_WORD}(?: {_NAME_WORD}){{0,4}})"
    rf"(?:/{_NAME_WORD}(?: {_NAME_WORD}){{0,2}})*\s*$"
)
_NOT_PICTURED = "(not pictured)"

_MONTH = (
    r"(?:Jan(?:uary|\.)?|Feb(?:ruary|\.)?|Mar(?:ch|\.)?|Apr(?:il|\.)?|May|June?|July?"
    r"|Aug(?:ust|\.)?|Sep(?:tember|t\.|\.)?|Oct(?:ober|\.)?|Nov(?:ember|\.)?|Dec(?:ember|\.)?)"
)
# `March 13 - `, `KYIV, March 13 (Reuters) - `, `LVIV (Reuters) — `; never eats `June 1 - 3`.
_DATELINE_RE = re.compile(
    r"(?:(?:[A-Z][A-Z .'’\-]*,\s+)?" + _MONTH + r"\s+\d{1,2}(?:,\s*\d{4})?(?:\s+\([^()]{1,40}\))?"
    r"|[A-Z][A-Z .'’\-]+\s+\([^()]{1,40}\))"
    r"\s+[-–—]{1,2}\s+(?=\D)"
)
# An agency credit ending the last paragraph after the final sentence: `... said. AGENCY`.
_CREDIT_RE = re.compile(r"(?:^|(?<=[.!?\"”’)])\s+)(?P<credit>[A-Z]{2,}(?:[-/ ][A-Z]{2,}){0,2})$")

# Sentence boundary candidates: end punctuation, closing quotes, space, then a letter or digit.
# `U.S`, `a.m`, `Ph.D` (the word before a final period, without it).
_INITIALISM_RE = re.compile(r"(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}")
_BOUNDARY_RE = re.compile(r"(?P<end>[.!?…]+[\"”’')\]]*)\s+(?=[\"“‘'(\[]?(?P<next>\w))")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Always followed by more of the same sentence.
_NEVER_FINAL = _words(
    "mr mrs ms mx dr prof sen rep gov gen lt col capt sgt cpl adm rev hon pres supt det insp"
    " st mt ft messrs mme mlle e.g i.e cf vs viz approx ca al"
)
# Followed by a number they are part of the sentence (`No. 5`, `Nov. 21`); otherwise may end it.
_BEFORE_NUMBER = _words(
    "no nos vol p pp fig art ch sec jan feb mar apr jun jul aug sep sept oct nov dec"
)
# May end a sentence (`... in the U.S. The ...`), but only if a typical sentence opener follows.
_MAY_END = _words("etc inc ltd co corp jr sr bros llc plc")
_OPENERS = _words(
    "The A An It He She They We I You This That These Those There Their His Her Its Our"
    " But And Yet So Then In On At For After Before When While If As Officials Police"
)


def parse_scraped(text: str, path: Path) -> Article:
    """Build an Article from the text of a scraped ``.txt`` file; raise ArticleError if unusable."""
    lines = text.split("\n")
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise ArticleError(f"{path}: file is empty; expected 'date YYYY-MM-DD' on line 1")
    published = _parse_date_line(lines[first], first + 1, path)
    paragraphs = _paragraphs(lines[first + 1 :])
    if len(paragraphs) > 1 and is_photo_caption(paragraphs[0]):
        del paragraphs[0]
    if paragraphs:
        paragraphs[0] = strip_dateline(paragraphs[0])
        last, source = split_credit(paragraphs[-1])
        paragraphs[-1] = last
        paragraphs = [p for p in paragraphs if p]
    else:
        source = None
    if not paragraphs:
        raise ArticleError(
            f"{path}: no article text after the date line on line {first + 1}; "
            "add the article's paragraphs separated by blank lines"
        )
    match = _NUMBERED_NAME_RE.fullmatch(path.stem)
    article_id = match["id"] if match else path.stem
    return Article(
        key=f"file:{article_id}",
        title=derive_title(paragraphs[0]),
        published=published,
        summary=summarize(paragraphs[0]),
        paragraphs=tuple(paragraphs),
        source=source,
        origin=str(path),
    )


def _parse_date_line(line: str, number: int, path: Path) -> datetime:
    expected = "expected 'date YYYY-MM-DD'"
    match = _DATE_LINE_RE.match(line)
    if match is None:
        raise ArticleError(f"{path}: line {number}: {expected}, got {_clip(line.strip())!r}")
    value = match["value"]
    if not _ISO_DATE_RE.fullmatch(value):
        raise ArticleError(f"{path}: line {number}: bad date {_clip(value)!r}, {expected}")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        reason = f"bad date {value!r} ({exc})"
        raise ArticleError(f"{path}: line {number}: {reason}, {expected}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _paragraphs(lines: list[str]) -> list[str]:
    """Group lines into paragraphs at blank lines, collapsing whitespace inside each."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    return paragraphs


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


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


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, keeping `U.S.`, `Mr. Roe`, `3.5` and quotations intact."""
    sentences = []
    start = 0
    for match in _BOUNDARY_RE.finditer(text):
        if not (match["next"].isupper() or match["next"].isdigit()):
            continue
        end = match.end("end")
        if match["end"] == "." and not _can_end_sentence(text, start, match):
            continue
        sentences.append(text[start:end].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _can_end_sentence(text: str, start: int, match: re.Match[str]) -> bool:
    """Whether the period at ``match`` ends a sentence rather than an abbreviation."""
    word = _last_word(text, start, match.start())
    lowered = word.lower()
    if lowered in _NEVER_FINAL:
        return False
    if lowered in _BEFORE_NUMBER:
        return not match["next"].isdigit()
    initial = len(word) == 1 and word.isupper()  # `J. Roe`
    if initial or lowered in _MAY_END or _INITIALISM_RE.fullmatch(word):
        following = text[match.end() : match.end() + 40].lstrip("\"“‘'([").split(" ", 1)[0]
        return not initial and following in _OPENERS
    return True


def _last_word(text: str, start: int, end: int) -> str:
    space = max(text.rfind(" ", start, end), start - 1)
    return text[space + 1 : end].lstrip("\"“‘'([")


def shorten(text: str, limit: int, *, drop_trailing: str = " ,;:-–—(“‘[") -> str:
    """Cut ``text`` at a word boundary to at most ``limit`` characters, ending in an ellipsis.

    ``drop_trailing``: the characters stripped from the end of the cut before the ellipsis.
    """
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if not text[limit - 1].isspace():
        head, space, _ = cut.rpartition(" ")
        if space:
            cut = head
    return cut.rstrip(drop_trailing) + ELLIPSIS


def derive_title(lead: str) -> str:
    """The lead's first sentence without its final period, cut to about 90 characters."""
    sentence = split_sentences(lead)[0]
    if sentence.endswith(".") and not sentence.endswith(".."):
        word = _last_word(sentence, 0, len(sentence) - 1)
        abbreviation = word.lower() in _MAY_END or _INITIALISM_RE.fullmatch(word)
        if len(word) > 1 and not abbreviation:
            sentence = sentence[:-1]
    return shorten(sentence, TITLE_MAX_CHARS)


def summarize(text: str) -> str:
    """The first one or two sentences of ``text``, at most about 300 characters."""
    sentences = split_sentences(text)
    if not sentences:
        return ""
    summary = sentences[0]
    if len(sentences) > 1 and len(summary) + 1 + len(sentences[1]) <= SUMMARY_MAX_CHARS:
        summary += " " + sentences[1]
    return shorten(summary, SUMMARY_MAX_CHARS)
