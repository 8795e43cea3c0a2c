"""Headlines and summaries derived from an article's lead, the one policy for every source.

A derived headline reads as a headline: the lead's first sentence when it is short enough,
else its first clause, cut before a clause boundary (``; ``, a spaced dash, ``, the mayor
said``, ``, which``, `` and ``, `` after``, ...) and never inside a quotation, brackets, a
number or a list of names; an ellipsis only when no clean cut exists. What the headline
already says is not repeated: :func:`split_headline` returns the text the body opens with
instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from newsletter.text import ELLIPSIS, cut_at_word

TITLE_MAX_CHARS = 90  # what a headline aims at
TITLE_HARD_MAX_CHARS = 100  # a clean cut may run this long rather than end in an ellipsis
TITLE_MIN_CHARS = 30  # a clause shorter than this says too little to stand alone
SUMMARY_MAX_CHARS = 300
_LOOKAHEAD_CHARS = 120  # how far past a cut a boundary's words are read (`, the ... said`)

# Sentence boundary candidates: end punctuation, closing quotes, space, then a letter or digit.
_BOUNDARY_RE = re.compile(r"(?P<end>[.!?…]+[\"”’')\]]*)\s+(?=[\"“‘'(\[]?(?P<next>\w))")
# `U.S`, `a.m`, `Ph.D` (the word before a final period, without it).
_INITIALISM_RE = re.compile(r"(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}")


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
# A headline never ends with one of these: they promise more of the phrase.
_DANGLING = (
    _words(
        "a an the and or but nor of to in on at by for from with without into onto over under"
        " about as than that which who whom whose its their his her our your my this these those"
        " after before while amid following since because despite between among across through"
        " during against via per if when where not no is are was were be been has have had will"
        " would could should can may might also very more most some such both each every"
        " including"
    )
    | _NEVER_FINAL
)

# Clause boundaries, strongest first. Group `head` ends the headline, `rest` starts the text
# the body continues with.
_ATTRIBUTION = (
    r"(?:[\w’'.\-]+\s+){0,6}?(?:(?:have|has|had|will|would)\s+)?"
    r"(?:said|say|says|told|reported|reports|announced|added|warned|confirmed|wrote|stated"
    r"|found|estimated|estimates|predicted|believe|believes)\b"
)
# A clause of its own follows these: the body goes on with it capitalized.
_SEMICOLON = re.compile(r"(?P<head>)[;:]\s+(?P<rest>\S)")
_STRONG_BOUNDARIES = (
    _SEMICOLON,
    re.compile(r"(?P<head>)\s+[-–—]{1,2}\s+(?P<rest>\S)"),
    # `, the national weather service said on Wednesday`, `, astronomers have found`
    re.compile(rf"(?P<head>),\s+(?P<rest>{_ATTRIBUTION}|according to\b)"),
)
# `, which`, `, after`, `, linking ...` (a participle clause).
_CONNECTORS = (
    "which|who|whose|where|while|as|after|following|amid|with|but|and|despite|before|because"
    "|since|when|although|though|including|in a bid|as part of|[a-z]{2,}ing"
)
_COMMA_BOUNDARY = re.compile(rf"(?P<head>),\s+(?P<rest>(?:{_CONNECTORS})\b)")
_BARE_BOUNDARY = re.compile(
    r"(?P<head>)\s+(?P<rest>(?:and|but|after|following|amid|while|despite|because|before|as)\s)"
)
# Any other comma before a lower-case word (`, the largest ever`); not `Amsel, Birkwald`.
_ANY_COMMA = re.compile(r"(?P<head>),\s+(?P<rest>[a-z])")
_BOUNDARY_TIERS = (_STRONG_BOUNDARIES, (_COMMA_BOUNDARY,), (_BARE_BOUNDARY,), (_ANY_COMMA,))
_SPEECH_VERBS = _words("said says told added wrote asked warned declared announced")
# ` as ` after these is a comparison or a role, not a clause: `such as`, `known as`.
_NOT_CLAUSE_AS = _words("such well known same so twice just as served serve serves acts acted")
_NUMBER_RE = re.compile(r"[\d.,:%/–-]*\d[\d.,:%/–-]*\w{0,2}")


@dataclass(frozen=True)
class _Cut:
    head: int  # the headline is sentence[:head]
    rest: int  # the body continues with sentence[rest:]
    full_clause: bool  # what follows is a sentence of its own


def split_sentences(text: str) -> list[str]:
    """Split text into sentences, keeping `U.S.`, `Mr. Roe`, `3.5` and quotations intact."""
    return list(iter_sentences(text))


def iter_sentences(text: str) -> Iterator[str]:
    """The sentences of ``text`` one by one, as :func:`split_sentences` finds them: only as
    much of a long text is read as the caller takes."""
    start = 0
    for match in _BOUNDARY_RE.finditer(text):
        if not (match["next"].isupper() or match["next"].isdigit()):
            continue
        end = match.end("end")
        if match["end"] == "." and not _can_end_sentence(text, start, match):
            continue
        yield text[start:end].strip()
        start = match.end()
    tail = text[start:].strip()
    if tail:
        yield tail


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


def split_headline(lead: str) -> tuple[str, str]:
    """A headline from ``lead`` (one paragraph of plain text) and what the body opens with.

    The second part is ``lead`` without what the headline already says: the rest of the first
    sentence ("…with 5 to 10 cm forecast", or a clause of its own, capitalized) followed by the
    other sentences; the whole ``lead`` when the headline had to end in an ellipsis.
    """
    # A leading "sentence" without a letter or digit (`…`, `--`) is no headline.
    first = next((s for s in iter_sentences(lead) if any(c.isalnum() for c in s)), "")
    if not first:
        return "", lead.strip()
    after = lead[lead.find(first) + len(first) :].strip()
    bare = _without_final_period(first)
    if len(bare) <= TITLE_MAX_CHARS:
        return bare, after
    cut = _clause_cut(bare, TITLE_MAX_CHARS) or _clause_cut(bare, TITLE_HARD_MAX_CHARS)
    if cut is None:
        return _ellipsis_cut(bare, TITLE_MAX_CHARS), lead
    headline = bare[: cut.head]
    rest = first[cut.rest :]
    rest = rest[:1].upper() + rest[1:] if cut.full_clause else ELLIPSIS + rest
    return headline, f"{rest} {after}".strip()


def summarize(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """As many whole leading sentences of ``text`` as fit in ``limit`` characters.

    A first sentence longer than that is cut at a clause boundary, or failing one at a word
    with an ellipsis, the way headlines are.
    """
    summary = ""
    first = ""
    for sentence in iter_sentences(text):
        first = first or sentence
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > limit:
            break
        summary = candidate
    if summary or not first:
        return summary
    cut = _clause_cut(first, limit - 1, strongest=False)
    return first[: cut.head] + ELLIPSIS if cut else _ellipsis_cut(first, limit)


def continuation(text: str, shown: str) -> str:
    """``text`` without ``shown`` at its start (a title already shown above it), else ``text``."""
    if not shown or not text.startswith(shown) or len(text) == len(shown):
        return text
    rest = text[len(shown) :]
    if rest[0].isalnum():  # `shown` ends inside a word: not the same text
        return text
    stripped = rest.lstrip(' .!?…"”’)')
    if not stripped:
        return ""
    if rest[0] in ".!?…":  # the title was a whole sentence: the next one follows
        return stripped
    clause = rest.lstrip(" ,;:–—-")
    if rest.lstrip().startswith((";", ":")):
        return clause[:1].upper() + clause[1:]
    return ELLIPSIS + clause


def _without_final_period(sentence: str) -> str:
    """A headline has no final period, unless it belongs to `U.S.`, `Inc.` or an initial."""
    if sentence.endswith(".") and not sentence.endswith(".."):
        word = _last_word(sentence, 0, len(sentence) - 1)
        initial = len(word) == 1 and word.isalpha()
        abbreviation = word.lower() in _MAY_END or _INITIALISM_RE.fullmatch(word)
        if not (initial or abbreviation):
            return sentence[:-1]
    return sentence


def _clause_cut(sentence: str, limit: int, *, strongest: bool = True) -> _Cut | None:
    """A clause boundary that leaves a headline of TITLE_MIN_CHARS..``limit`` characters.

    With ``strongest``, the latest boundary of the strongest kind found (a semicolon beats
    `` and ``); otherwise the latest boundary of any kind.
    """
    best: _Cut | None = None
    # Only the start can hold the cut: look no further (long sentences cost nothing more).
    sentence = sentence[: limit + _LOOKAHEAD_CHARS]
    for tier in _BOUNDARY_TIERS:
        for pattern in tier:
            for match in pattern.finditer(sentence):
                head = _trim_dangling(sentence[: match.start("head")])
                if not TITLE_MIN_CHARS <= len(head) <= limit:
                    continue
                if not _is_clean_cut(sentence, match.start("head"), match.start("rest")):
                    continue
                if pattern is _ANY_COMMA and _starts_list_item(sentence[match.start("rest") :]):
                    continue
                cut = _Cut(len(head), match.start("rest"), pattern is _SEMICOLON)
                if best is None or cut.head > best.head:
                    best = cut
        if best is not None and strongest:
            return best
    return best


def _is_clean_cut(sentence: str, head: int, rest: int) -> bool:
    """Not inside a quotation or brackets, nor between two names or numbers (`A and B`)."""
    before = sentence[:head]
    if _unclosed_opener(before) >= 0:
        return False
    if sentence.startswith(":", head) and before.rpartition(" ")[2].lower() in _SPEECH_VERBS:
        return False  # `the mayor said: ...` is not a headline
    words_before = before.split()
    connector, _, after = sentence[rest:].partition(" ")
    if not words_before:
        return True
    left = words_before[-1].strip(",;:")
    if _NUMBER_RE.fullmatch(left) and _NUMBER_RE.match(connector):  # `5 - 10`, `1914–18`
        return False
    if not after:
        return True
    right = after.split(" ", 1)[0]
    if connector == "as":
        return left.lower() not in _NOT_CLAUSE_AS
    if connector != "and":
        return True
    names = left[:1].isupper() and right[:1].isupper()
    numbers = bool(_NUMBER_RE.fullmatch(left)) or bool(_NUMBER_RE.match(right))
    # `shift workers, students and hospital staff`: the last item of a list
    listed = "," in before and len(before.rpartition(",")[2].split()) <= 3
    return not (names or numbers or listed)


def _starts_list_item(text: str) -> bool:
    """`milk and eggs by ...`: the next item of a list (`bread, milk and eggs`), not a clause."""
    return any(word in ("and", "or") for word in text.split(" ", 4)[1:4])


def _unclosed_opener(text: str) -> int:
    """Where the last quotation or bracket still open at the end of ``text`` begins, or -1."""
    positions = [
        text.rfind(opener)
        for opener, closer in (("(", ")"), ("[", "]"), ("“", "”"))
        if text.count(opener) > text.count(closer)
    ]
    if text.count('"') % 2:
        positions.append(text.rfind('"'))
    return max(positions, default=-1)


def _trim_dangling(head: str, *, numbers: bool = False) -> str:
    """``head`` (a prefix of a sentence) without trailing punctuation and the words that
    leave a phrase unfinished (`and`, `of the`), and with ``numbers`` a number cut off from
    the rest of its phrase (`with 5` of `with 5 to 10 cm`)."""
    while True:
        head = head.rstrip(" ,;:–—-")
        space = head.rfind(" ")
        if space < 0:
            return head
        word = head[space + 1 :]
        if word.lower() not in _DANGLING and not (numbers and _NUMBER_RE.fullmatch(word)):
            return head
        head = head[:space]


def _ellipsis_cut(sentence: str, limit: int) -> str:
    """``sentence`` cut at a word within ``limit`` characters, ellipsis included, never after
    a dangling word or a number, nor inside a quotation or brackets opened near the end."""
    if len(sentence) <= limit:
        return sentence
    cut = cut_at_word(sentence, limit - 1)
    opener = _unclosed_opener(cut)
    if opener >= TITLE_MIN_CHARS:
        cut = cut[:opener]
    trimmed = _trim_dangling(cut, numbers=True) or cut.rstrip(" ,;:–—-") or cut
    return trimmed.rstrip(" .") + ELLIPSIS
