"""Reading articles from a folder: scraped ``.txt`` files and Markdown with front matter.

Fixture files live in ``tests/articles/`` and are named after the case they cover.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsletter.config import SourcesSettings
from newsletter.errors import ArticleError, SourceError
from newsletter.models import Article
from newsletter.sources.base import SourceResult
from newsletter.sources.folder import read_article_file, read_articles_dir
from newsletter.sources.scraped import is_photo_caption, split_credit, strip_dateline

ARTICLES = Path(__file__).parent / "articles"
SEEDS = Path(__file__).parent.parent / "seeds"


def read(name: str) -> Article:
    return read_article_file(ARTICLES / name)


# --- scraped text files ---------------------------------------------------------------------


def test_caption_dateline_and_credit_are_removed() -> None:
    article = read("caption_and_credit.txt")

    assert article == Article(
        key="file:caption_and_credit",
        title=(
            "Crews restored power to most of the city on Thursday after a storm brought down lines"
        ),
        published=datetime(2026, 3, 14, tzinfo=UTC),
        # The headline is the lead's first sentence: neither the body nor the summary repeat it.
        summary=(
            'Officials said full repairs would take days. "We are working around the clock," '
            "the grid operator said."
        ),
        paragraphs=(
            "Officials said full repairs would take days.",
            '"We are working around the clock," the grid operator said.',
        ),
        body_html=None,
        url=None,
        source="AGENCY",
        origin=str(ARTICLES / "caption_and_credit.txt"),
    )
    text = " ".join(article.paragraphs)
    assert "Jane Roe" not in text
    assert "March 13" not in text


def test_caption_saying_not_pictured_is_dropped() -> None:
    article = read("caption_not_pictured.txt")

    assert article.paragraphs == ("The station will house four engines and a rescue boat.",)
    assert (
        article.title
        == "The city's oldest fire station reopened on Friday after an 18-month renovation"
    )
    assert article.source is None


def test_signup_prompt_on_the_date_line_is_dropped() -> None:
    article = read("signup_junk_on_date_line.txt")

    assert article.published == datetime(2026, 11, 25, tzinfo=UTC)
    assert article.title == "The first snow of the season is expected on Thursday night"
    assert article.paragraphs == ("Forecasters warned of icy roads.",)


def test_file_without_caption_dateline_or_credit_keeps_every_paragraph() -> None:
    article = read("plain_no_extras.txt")

    assert article.paragraphs == (
        "A detour adds about 600 metres.",
        "Engineers said the new deck should last at least 40 years.",
    )
    assert article.title == "The Kingsgate footbridge will close for three weeks from Monday"
    assert article.summary == (
        "A detour adds about 600 metres. Engineers said the new deck should last at least 40 years."
    )
    assert article.source is None


def test_credit_alone_in_the_last_paragraph_becomes_the_source() -> None:
    article = read("credit_as_last_paragraph.txt")

    # A one-sentence article is all headline: no body or summary repeating it.
    assert article.title == "Astronomers found that a small asteroid spins once every 3.5 hours"
    assert (article.paragraphs, article.summary, article.body_html) == ((), "", None)
    assert article.source == "REUTERS"


def test_abbreviations_numbers_and_quotes_do_not_split_sentences() -> None:
    article = read("abbreviations_and_quotes.txt")

    assert article.title == (
        "Mr. Jonas Albrecht of the U.S. Geological Survey said the tremor measured 3.5 on Tuesday"
    )
    assert article.summary == '"It was felt across the valley," he said. No damage was reported.'


def test_whitespace_inside_paragraphs_is_collapsed() -> None:
    article = read("wrapped_lines.txt")

    assert article.title == "The café on Halden Square reopened on Monday"
    assert article.paragraphs == ("Its owner, Élise Fontaine, said prices stay under €4.",)


def test_long_lead_gives_cut_title_and_summary() -> None:
    article = read("long_lead.txt")

    # No clean cut within 100 characters (`Amsel, Birkwald and Corvey` is a list of names):
    # an ellipsis, and not after `to the`.
    assert article.title == (
        "The regional council voted on Wednesday evening to extend the night bus network…"
    )
    # The body keeps the whole lead, since the headline does not say all of its sentence.
    assert article.paragraphs[0].startswith(article.title.removesuffix("…") + " to the three")
    assert article.summary == (
        "The regional council voted on Wednesday evening to extend the night bus network to the "
        "three outer villages of Amsel, Birkwald and Corvey…"
    )


def test_key_is_the_id_after_the_number_prefix(tmp_path: Path) -> None:
    path = tmp_path / "004_9f2c1ab3.txt"
    path.write_text("date 2026-11-25\n\nSnow is expected.\n", encoding="utf-8")

    assert read_article_file(path).key == "file:9f2c1ab3"


def test_windows_line_endings_and_byte_order_mark_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(
        "\ufeffdate 2026-11-25\r\n\r\nCaption here. AGENCY/Jane Roe\r\n\r\n"
        "Snow is\r\nexpected. AGENCY\r\n".encode()
    )

    article = read_article_file(path)

    assert article.published == datetime(2026, 11, 25, tzinfo=UTC)
    assert article.title == "Snow is expected"
    assert article.paragraphs == ()
    assert article.source == "AGENCY"


def test_leading_blank_lines_before_the_date_line_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "leading.txt"
    path.write_text("\n\ndate 2026-11-25\n\nSnow is expected.\n", encoding="utf-8")

    assert read_article_file(path).published == datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("lead", "stripped"),
    [
        ("March 13 - Crews worked.", "Crews worked."),
        ("November 24 – Crews worked.", "Crews worked."),
        ("Nov. 24, 2026 — Crews worked.", "Crews worked."),
        ("LVIV, March 13 (Agency) - Crews worked.", "Crews worked."),
        ("LVIV (Agency) - Crews worked.", "Crews worked."),
        ("ROTTERDAM, Nov 21 (Reuters) - Crews worked.", "Crews worked."),
        ("Feb 6 - Crews worked.", "Crews worked."),
        ("SAO PAULO/LONDON, Feb 6 (Reuters) -- Crews worked.", "Crews worked."),
        ("ST. PETERSBURG, Florida, March 5 (Reuters) — Crews worked.", "Crews worked."),
        ("MÜNCHEN, 3 March - Crews worked.", "MÜNCHEN, 3 March - Crews worked."),  # not a dateline
        ("KYIV — Crews worked.", "Crews worked."),
        ("June 1 - 3 is the festival week.", "June 1 - 3 is the festival week."),
        ("Crews worked on March 13 - all day.", "Crews worked on March 13 - all day."),
    ],
)
def test_strip_dateline(lead: str, stripped: str) -> None:
    assert strip_dateline(lead) == stripped


@pytest.mark.parametrize(
    ("paragraph", "expected"),
    [
        ("the operator said. AGENCY", ("the operator said.", "AGENCY")),
        ('"We are done," he said. REUTERS', ('"We are done," he said.', "REUTERS")),
        ("It ended. EPA-EFE", ("It ended.", "EPA-EFE")),
        ("AFP", ("", "AFP")),
        ("a summit hosted by NATO", ("a summit hosted by NATO", None)),
        ("He works for NASA.", ("He works for NASA.", None)),
    ],
)
def test_split_credit(paragraph: str, expected: tuple[str, str | None]) -> None:
    assert split_credit(paragraph) == expected


@pytest.mark.parametrize(
    ("paragraph", "caption"),
    [
        ("A worker repairs a cable, March 12, 2026. AGENCY/Jane Roe", True),
        ("Crowds at the fair. REUTERS/Stringer", True),
        ("A crowd gathers. AP Photo/J. Doe/File Photo", True),
        ("Volunteers plant trees, May 16, 2026. (AP Photo/Julia Demaree Nikhinson)", True),
        ("A logo in Bergen. REUTERS/Piroschka van de Wouw/File Photo", True),
        ("Marchers pass Mayor Ana Petrov (not pictured) in the square.", True),
        ("The band paid tribute to AC/DC", False),
        ("Crews restored power on Thursday.", False),
    ],
)
def test_is_photo_caption(paragraph: str, caption: bool) -> None:
    assert is_photo_caption(paragraph) is caption


# --- Markdown with front matter -------------------------------------------------------------


def test_markdown_with_every_front_matter_field() -> None:
    article = read("front_matter_full.md")

    assert article == Article(
        key="url:https://news.example.org/2026/11/winter-market",
        title="Winter market returns with a “zero waste” pledge",
        published=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        summary="Every stall must use returnable dishes.",
        paragraphs=(),
        body_html=(
            "<p>The <strong>winter market</strong> opens on Saturday.</p>\n"
            '<p>Cups cost a €2 deposit. See the <a href="https://events.example.org/market" '
            'rel="noopener noreferrer">events page</a>.</p>'
        ),
        url="https://news.example.org/2026/11/winter-market",
        tags=("city", "events"),
        origin=str(ARTICLES / "front_matter_full.md"),
    )


def test_markdown_without_url_or_summary() -> None:
    article = read("front_matter_minimal.md")

    assert article.key == "md:front_matter_minimal"
    assert article.url is None
    assert article.published == datetime(2026, 11, 21, tzinfo=UTC)
    assert article.tags == ()
    # Derived from the first paragraph (not the heading), as plain text.
    assert article.summary == (
        "The Kestrel Ridge Observatory opens its dome on Saturday for a free night of stargazing "
        "with the 60-cm telescope & guides. Volunteers from the astronomy club will help. "
        "Doors open at 19:00."
    )
    assert article.body_html is not None
    # Sanitized like feed content: the top heading becomes an <h2> in the email.
    assert article.body_html.startswith("<h2>Open night</h2>\n<p>The <em>Kestrel Ridge</em>")


def test_markdown_tags_as_a_comma_string() -> None:
    assert read("tags_comma_string.md").tags == ("city", "transit", "night buses")


def test_hostile_markdown_is_escaped_and_bad_links_dropped() -> None:
    html = read("hostile_markdown.md").body_html
    assert html is not None

    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "<img" not in html
    assert "&lt;img src=x" in html
    # Escaped text may quote a bad URL; no real tag may carry one.
    tags = re.findall(r"<(?:a|img)\b[^>]*>", html.lower())
    for scheme in ("javascript:", "vbscript:", "data:"):
        assert not any(scheme in tag for tag in tags)
    assert html.count("<a ") == 1
    assert '<a href="https://example.org/ok" rel="noopener noreferrer">safe link</a>' in html


@pytest.mark.parametrize(
    ("value", "published"),
    [
        ("2026-11-21", datetime(2026, 11, 21, tzinfo=UTC)),
        ("2026-11-21 08:30:00", datetime(2026, 11, 21, 8, 30, tzinfo=UTC)),
        ("2026-11-21T08:30:00+01:00", datetime(2026, 11, 21, 7, 30, tzinfo=UTC)),
        ('"2026-11-21T08:30Z"', datetime(2026, 11, 21, 8, 30, tzinfo=UTC)),
        ("2026-11-21 08:30", datetime(2026, 11, 21, 8, 30, tzinfo=UTC)),
    ],
)
def test_markdown_dates_become_aware_utc(tmp_path: Path, value: str, published: datetime) -> None:
    path = tmp_path / "dated.md"
    path.write_text(f"---\ntitle: Dated\ndate: {value}\n---\nBody.\n", encoding="utf-8")

    result = read_article_file(path).published

    assert result == published
    assert result.tzinfo is UTC


# --- files that cannot be read --------------------------------------------------------------

BAD_FILES = {
    "no_date_line.txt": "line 1: expected 'date YYYY-MM-DD', got 'dat 2026-03-14'",
    "bad_date.txt": (
        "line 1: bad date '2026-02-30' (day is out of range for month), expected 'date YYYY-MM-DD'"
    ),
    "date_wrong_format.txt": "line 1: bad date '14.03.2026', expected 'date YYYY-MM-DD'",
    "date_line_only.txt": (
        "no article text after the date line on line 1; "
        "add the article's paragraphs separated by blank lines"
    ),
    "empty.txt": "file is empty; expected 'date YYYY-MM-DD' on line 1",
    "not_utf8.txt": "line 3: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
    "empty.md": "file is empty; expected '---' front matter (title, date)",
    "no_front_matter.md": (
        "line 1: expected '---' to open the front matter (title and date are required), "
        "got '# Just a heading'"
    ),
    "front_matter_not_closed.md": (
        "line 1: front matter opened with '---' is never closed; "
        "add a '---' line after the last key"
    ),
    "front_matter_not_mapping.md": (
        "line 2: front matter must be 'key: value' lines (title, date, url, summary, tags)"
    ),
    "front_matter_missing_title.md": (
        "lines 1-4: front matter needs a non-empty 'title' (add 'title: <headline>')"
    ),
    "front_matter_missing_date.md": (
        "lines 1-3: front matter needs a 'date' "
        "(use a date like 2026-11-21 or a datetime like 2026-11-21T08:30:00+01:00)"
    ),
    "front_matter_bad_date.md": (
        "line 3: bad 'date' 'next tuesday'; "
        "use a date like 2026-11-21 or a datetime like 2026-11-21T08:30:00+01:00"
    ),
    "front_matter_impossible_date.md": (
        "line 3: bad value for 'date': day is out of range for month"
    ),
    "front_matter_bad_url.md": (
        "line 4: 'url' must be an http:// or https:// address, got 'javascript:alert(1)'"
    ),
    "front_matter_bad_yaml.md": (
        "line 4: front matter is not valid YAML: while parsing a flow sequence, "
        "did not find expected ',' or ']' "
        "(quote values that contain ': ' or start with a special character)"
    ),
    "front_matter_empty_body.md": (
        "no article text after the front matter (line 4); add the body below the closing '---'"
    ),
}


@pytest.mark.parametrize(("name", "reason"), BAD_FILES.items())
def test_bad_file_message_names_path_and_reason(name: str, reason: str) -> None:
    path = ARTICLES / name

    with pytest.raises(ArticleError) as caught:
        read_article_file(path)

    assert str(caught.value) == f"{path}: {reason}"


def test_not_utf8_fixture_really_is_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        (ARTICLES / "not_utf8.txt").read_bytes().decode("utf-8")


def test_unsupported_extension() -> None:
    path = ARTICLES / "unsupported_extension.rtf"

    with pytest.raises(ArticleError) as caught:
        read_article_file(path)

    assert str(caught.value) == (
        f"{path}: unsupported file type '.rtf'; "
        "articles must be .txt (scraped text) or .md (Markdown with front matter)"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"

    with pytest.raises(ArticleError, match=r"gone\.txt: cannot read file: No such file"):
        read_article_file(path)


def test_bad_date_line_reports_its_real_line_number(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_text("\n\npublished 2026-11-25\n\nText.\n", encoding="utf-8")

    with pytest.raises(ArticleError, match=r"late\.txt: line 3: expected 'date YYYY-MM-DD'"):
        read_article_file(path)


# --- the folder -----------------------------------------------------------------------------


def test_folder_skips_bad_files_and_keeps_the_others(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="newsletter")

    result = read_articles_dir(ARTICLES)

    assert isinstance(result, SourceResult)
    problem_files = [str(problem).split(": ", 1)[0] for problem in result.problems]
    assert problem_files == [str(ARTICLES / name) for name in sorted(BAD_FILES)]
    good = sorted(
        p.name
        for p in ARTICLES.iterdir()
        if p.suffix in (".txt", ".md") and p.name not in BAD_FILES
    )
    assert [Path(article.origin).name for article in result.articles] == good
    assert [r for r in caplog.records if r.name.startswith("newsletter")] == []


def test_folder_reads_txt_and_md_by_name_and_ignores_the_rest(tmp_path: Path) -> None:
    good = "date 2026-11-25\n\nText.\n"
    (tmp_path / "b.txt").write_text(good, encoding="utf-8")
    (tmp_path / "a.md").write_text("---\ntitle: A\ndate: 2026-11-25\n---\nText.\n", "utf-8")
    (tmp_path / "C.TXT").write_text(good, encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("not an article", encoding="utf-8")
    (tmp_path / "._b.txt").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (tmp_path / "notes.rst").write_text("not an article", encoding="utf-8")
    (tmp_path / "b.txt~").write_text("editor backup", encoding="utf-8")
    (tmp_path / "folder.txt").mkdir()

    result = read_articles_dir(tmp_path)

    assert [Path(a.origin).name for a in result.articles] == ["C.TXT", "a.md", "b.txt"]
    assert result.problems == []


def test_missing_folder_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    with pytest.raises(SourceError) as caught:
        read_articles_dir(missing)

    assert str(caught.value) == (
        f"{missing}: articles folder not found; create it or point [sources] articles_dir at one"
    )


def test_file_instead_of_folder_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x", encoding="utf-8")

    with pytest.raises(SourceError) as caught:
        read_articles_dir(path)

    assert str(caught.value) == (
        f"{path}: not a folder; point [sources] articles_dir at a folder of .txt/.md articles"
    )


# --- the sample articles --------------------------------------------------------------------


def test_every_seed_parses_without_problems() -> None:
    result = read_articles_dir(SEEDS)

    assert result.problems == []
    names = sorted(p.name for p in SEEDS.iterdir() if not p.name.startswith("."))
    assert [Path(a.origin).name for a in result.articles] == names
    assert len([n for n in names if n.endswith(".txt")]) == 7
    assert len([n for n in names if n.endswith(".md")]) == 2
    assert len({a.key for a in result.articles}) == len(result.articles)
    for article in result.articles:
        assert datetime(2026, 2, 7, tzinfo=UTC) <= article.published
        assert article.published < datetime(2026, 11, 27, tzinfo=UTC)
        assert article.title
        assert len(article.title) <= 100
        assert article.summary
        assert len(article.summary) <= 300
        assert bool(article.paragraphs) != bool(article.body_html)


def test_seeds_are_clean_of_captions_credits_and_signup_text() -> None:
    result = read_articles_dir(SEEDS)

    text = " ".join(p for article in result.articles for p in article.paragraphs)
    assert "/" not in text  # no photo credit left (`AGENCY/Name`)
    assert "(not pictured)" not in text
    assert "Subscribe" not in text
    assert "November 2" not in text  # datelines stripped
    assert "Feb 6 -" not in text
    assert "Sign up" not in text
    assert {a.source for a in result.articles} == {
        "CITYWIRE",
        "SKYWIRE",
        "REGIONPRESS",
        "REUTERS",
        None,
    }


# SHA-256 of the collector's real output file, as it was handed over.
REFERENCE_SAMPLE_SHA256 = "a92acc788fa8de1f9b3af00372ad5d9be1a535b14b0eff8627e7fccdda53fc99"


def test_the_reference_sample_is_in_the_seeds_byte_for_byte() -> None:
    sample = SEEDS / "000_b6c0e47541ad49e3.txt"
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == REFERENCE_SAMPLE_SHA256
    assert sample.read_bytes().startswith(b" date 2026-02-07 Sign up now:")
    article = read_article_file(sample)
    assert article.published == datetime(2026, 2, 7, tzinfo=UTC)
    assert article.source == "REUTERS"
    text = " ".join(article.paragraphs)
    assert "Anatolii Stepanov" not in text and "(not pictured)" not in text
    assert text.endswith("failing to take decisive action to deal with the system breakdowns.")


# --- bounded work per article ----------------------------------------------------------------


def test_an_article_file_over_the_limit_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "001_huge.txt"
    with path.open("wb") as file:
        file.truncate(100_000_000)  # 100 MB on paper, a sparse file on disk

    tracemalloc.start()
    try:
        with pytest.raises(ArticleError) as caught:
            read_article_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert str(caught.value) == (
        f"{path}: 100,000,000 bytes is larger than [sources] max_article_bytes (1,000,000 bytes); "
        "shorten the article or raise the limit"
    )
    assert peak < 100_000  # the size was checked before any of it was read


def test_the_limit_is_a_setting_and_the_other_files_still_go_out(tmp_path: Path) -> None:
    (tmp_path / "001_small.txt").write_text("date 2026-11-25\n\nSnow is expected.\n", "utf-8")
    big = tmp_path / "002_big.txt"
    big.write_text("date 2026-11-25\n\n" + "Snow is expected. " * 200, encoding="utf-8")

    result = read_articles_dir(tmp_path, max_bytes=2048)

    assert [Path(a.origin).name for a in result.articles] == ["001_small.txt"]
    assert [str(p) for p in result.problems] == [
        f"{big}: {big.stat().st_size:,} bytes is larger than [sources] max_article_bytes "
        "(2,048 bytes); shorten the article or raise the limit"
    ]


def test_the_default_limit_is_about_a_megabyte() -> None:
    assert SourcesSettings().max_article_bytes == 1_000_000
