"""Scraped ``.txt`` files as scrapers really write them, and arbitrary bytes as article files.

Each fixture in ``tests/articles/`` is an invented article named after the quirk it carries
(byte order mark, CR line ends, NBSP before the text, a Reuters dateline, ...). Each case
says exactly what is kept (date, headline, paragraphs, credit) and what must be gone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.errors import ArticleError
from newsletter.sources.folder import read_article_file

ARTICLES = Path(__file__).parent / "articles"


@dataclass(frozen=True)
class Expected:
    published: date
    title: str
    paragraphs: tuple[str, ...]
    source: str | None
    dropped: tuple[str, ...] = ()  # fragments that must appear nowhere in the article


VARIANTS = {
    "leading_space_before_date.txt": Expected(
        date(2026, 2, 7),
        "Dock workers at the port of Valdremo ended a four-day strike on Friday",
        (
            "…after the operator agreed to hire 120 more crane drivers.",
            "The strike had left about 40 ships waiting offshore.",
        ),
        "REUTERS",
        dropped=("Sign up", "newsletters", "Harbour pilots", "Inês Carvalho", "Feb 6"),
    ),
    "byte_order_mark_and_crlf.txt": Expected(
        date(2026, 3, 2),
        "Spain's rail operator will add 14 night trains to its winter timetable",
        ("Tickets go on sale on Monday.",),
        None,
        dropped=("\ufeff", "\r", "MADRID", "(Reuters)"),
    ),
    "old_mac_line_endings.txt": Expected(
        date(2026, 3, 3),
        "The Orla valley cheese fair opens on Saturday with 60 producers",
        ("Entry costs €4.", "Parking is free at the old station."),
        "AFP",
        dropped=("\r",),
    ),
    "tabs_and_nbsp_everywhere.txt": Expected(
        date(2026, 3, 4),
        "The city library will stay open until midnight during exam weeks",
        ("Students need a library card.",),
        None,
        dropped=("\t", "\u00a0", "  "),
    ),
    "reuters_dateline_with_city.txt": Expected(
        date(2026, 11, 21),
        "The port of Rotterdam handled 2% more containers in October than a year earlier",
        ("…the port authority said on Friday.", "Volumes from Asia rose the most."),
        "REUTERS",
        dropped=("ROTTERDAM,", "Nov 21", "(Reuters)"),
    ),
    "dateline_nbsp_before_text.txt": Expected(
        date(2026, 2, 6),
        "Ferry services to the outer islands resumed on Friday",
        ("Operators said timetables would return to normal by Sunday.",),
        None,
        dropped=("Feb 6", "\u00a0"),
    ),
    "reuters_file_photo_caption.txt": Expected(
        date(2026, 4, 10),
        "Norvik Shipping posted a first-quarter loss on Thursday",
        (
            "The company blamed weak freight rates and the cost of rerouting ships around the "
            "Cape of Good Hope.",
            "Its shares fell 4% in early trading.",
        ),
        "REUTERS",
        dropped=("A logo is seen", "Piroschka van de Wouw", "File Photo", "OSLO"),
    ),
    "ap_photo_caption.txt": Expected(
        date(2026, 5, 18),
        "Volunteers planted 1,200 trees along the Lackawanna River on Saturday",
        (
            "…the largest single planting in the county's history.",
            "The saplings were donated by a regional nursery.",
        ),
        "AP",
        dropped=("AP Photo", "Julia Demaree Nikhinson", "Dunmore, Pa."),
    ),
    "date_glued_to_junk.txt": Expected(
        date(2026, 6, 1),
        "The Westbrook swimming pool reopens on Monday after a two-year rebuild",
        ("A day ticket costs €6.",),
        None,
        dropped=("Advertisement", "Scroll to continue"),
    ),
    "blank_lines_and_spaces_around.txt": Expected(
        date(2026, 6, 2),
        "The night market on Pier 3 returns on Friday",
        ("Stalls open at 18:00.",),
        None,
    ),
    "reporting_by_line.txt": Expected(
        date(2026, 7, 9),
        "EU ministers agreed on Thursday to extend Baltic herring quotas by one year",
        ("The decision will be reviewed in December.",),
        None,
        dropped=("BRUSSELS", "Reporting by", "Anna Lind", "Editing by"),
    ),
    "signup_prompt_between_paragraphs.txt": Expected(
        date(2026, 7, 15),
        "The regional bus company will accept contactless payment on all routes from August 1",
        (
            "Cash will still be accepted until the end of the year.",
            # not a prompt: says nothing of a newsletter
            "Sign up opens on Monday for the new monthly pass.",
        ),
        None,
        dropped=("Sign up here", "newsletter"),
    ),
    "separator_lines.txt": Expected(
        date(2026, 8, 20),
        "Lifeguards will patrol Sandvik beach every weekend until the end of September",
        ("The beach café stays open until 20:00.",),
        None,
        dropped=("* * *", "—"),
    ),
    "zero_width_spaces.txt": Expected(
        date(2026, 9, 1),
        "The university will open a new research centre for coastal ecology in October",
        ("It will employ 35 scientists.",),
        None,
        dropped=("\u200b", "\u00ad"),
    ),
    "city_and_country_dateline.txt": Expected(
        date(2026, 3, 5),
        "Florida's citrus harvest will be the smallest in almost a century",
        ("…state forecasters said on Thursday.", "Growers blame disease and hurricanes."),
        "REUTERS",
        dropped=("ST. PETERSBURG", "March 5", "(Reuters)"),
    ),
    "caption_in_the_middle.txt": Expected(
        date(2026, 10, 2),
        "Two climbers were rescued from Mount Arvel on Thursday",
        (
            "…after spending a night in a snow cave.",
            "Both were taken to hospital with mild frostbite.",
        ),
        "ALPPRESS",
        dropped=("Climbers rest", "helicopter", "Maria Huber"),
    ),
}


def test_there_are_at_least_a_dozen_variants_and_each_fixture_exists() -> None:
    assert len(VARIANTS) >= 12
    for name in VARIANTS:
        assert (ARTICLES / name).is_file(), name


def test_the_fixtures_really_carry_their_quirks() -> None:
    raw = {name: (ARTICLES / name).read_bytes() for name in VARIANTS}
    assert raw["leading_space_before_date.txt"].startswith(b" date ")
    assert raw["byte_order_mark_and_crlf.txt"].startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw["byte_order_mark_and_crlf.txt"]
    assert b"\r" in raw["old_mac_line_endings.txt"]
    assert b"\n" not in raw["old_mac_line_endings.txt"]
    assert b"\t" in raw["tabs_and_nbsp_everywhere.txt"]
    assert "\u00a0".encode() in raw["tabs_and_nbsp_everywhere.txt"]
    assert "-\u00a0Ferry".encode() in raw["dateline_nbsp_before_text.txt"]
    assert "\u200b".encode() in raw["zero_width_spaces.txt"]


@pytest.mark.parametrize(("name", "expected"), VARIANTS.items(), ids=list(VARIANTS))
def test_variant_keeps_exactly_the_article(name: str, expected: Expected) -> None:
    article = read_article_file(ARTICLES / name)

    assert article.published == datetime.combine(expected.published, datetime.min.time(), UTC)
    assert article.title == expected.title
    assert article.paragraphs == expected.paragraphs
    assert article.source == expected.source
    assert article.key == f"file:{Path(name).stem}"
    everything = " ".join((article.title, article.summary, *article.paragraphs))
    for fragment in expected.dropped:
        assert fragment not in everything, fragment


# -- any bytes at all ------------------------------------------------------------------------

DATE_LINES = st.sampled_from(
    ["date 2026-02-07", " date 2026-02-07 Sign up now", "\ufeffdate 2026-02-07", "date x", ""]
)
JUNK = st.sampled_from(["\r\n", "\r", "\n\n", "\t", "\u00a0", "\u200b", " ", "(Reuters) - "])
SCRAPED_TEXT = st.builds(
    lambda head, parts: head + "\n\n" + "".join(parts),
    DATE_LINES,
    st.lists(st.one_of(st.text(max_size=80), JUNK), max_size=12),
)


def _check_never_crashes(path: Path) -> None:
    try:
        article = read_article_file(path)
    except ArticleError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message and "\r" not in message
        return
    assert article.title.strip()
    assert "\n" not in article.title
    assert article.published.tzinfo is UTC
    assert all(p.strip() for p in article.paragraphs)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000), name=st.sampled_from(["001_any.txt", "any.md"]))
@example(data=b"date 2026-02-07\n\n\xe2\x80\xa6", name="001_any.txt")
@example(data=b"date 2026-02-07\n\n. . .\n\nREUTERS", name="001_any.txt")
@example(data=b"date 0001-01-01\n\n\x00\x01 a", name="001_any.txt")
@example(data=b"---\ntitle: x\ndate: 2026-01-01\n---\n\x00", name="any.md")
def test_any_bytes_never_crash_the_reader(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    _check_never_crashes(path)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    title=st.text(max_size=120),
    body=st.text(max_size=300),
    summary=st.one_of(st.none(), st.text(max_size=80)),
)
def test_any_markdown_text_never_crashes_the_reader(
    tmp_path: Path, title: str, body: str, summary: str | None
) -> None:
    front = f"title: {json.dumps(title)}\ndate: 2026-11-21\n"
    if summary is not None:
        front += f"summary: {json.dumps(summary)}\n"
    path = tmp_path / "any.md"
    path.write_text(f"---\n{front}---\n{body}", encoding="utf-8")
    _check_never_crashes(path)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=SCRAPED_TEXT)
def test_any_scraped_looking_text_never_crashes_the_reader(tmp_path: Path, text: str) -> None:
    path = tmp_path / "002_text.txt"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check_never_crashes(path)
