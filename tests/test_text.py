"""The shared text helpers: whitespace, shortening, URLs, HTML on one line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import render_text
from newsletter.text import clip, collapse, cut_at_word, html_to_line, is_http_url, truncate


def test_collapse_makes_every_kind_of_space_one_and_drops_invisible_characters() -> None:
    assert collapse("\ufeff a\t\u00a0b\r\n\r\nc\u2009d\x00e\u200bf\u00adg \u3000") == "a b c d efg"
    assert collapse("") == ""


def test_truncate_cuts_at_a_word_boundary() -> None:
    assert truncate("short text", 20) == "short text"
    assert truncate("one two three four", 12) == "one two…"
    assert truncate("one two, three four", 10) == "one two…"
    assert truncate("one two three", 8) == "one two…"  # the cut falls on the space
    assert truncate("abcdefghijkl", 6) == "abcde…"
    assert truncate("storm. Power is out", 9) == "storm…"


def test_cut_at_word() -> None:
    assert cut_at_word("one two three", 7) == "one two"
    assert cut_at_word("one two three", 6) == "one"
    assert cut_at_word("abcdef", 3) == "abc"


def test_clip_quotes_input_on_one_line() -> None:
    assert clip("a\nb") == "a b"
    assert clip("x" * 50, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://example.org/a", True),
        (" HTTP://example.org ", True),
        ("https://", False),
        ("javascript:alert(1)", False),
        ("https://exa mple.org", False),
        ("http://[::1", False),
        ("/relative", False),
        (None, False),
        (42, False),
    ],
)
def test_is_http_url(value: object, ok: bool) -> None:
    assert is_http_url(value) is ok


def test_html_to_line() -> None:
    html = "<p>One</p><p>Two &amp;three</p><script>x()</script>H<sub>2</sub>O<br>next &lt;b&gt;"
    assert html_to_line(html) == "One Two &three H2O next <b>"


def test_render_text_uses_the_same_helpers() -> None:
    assert render_text.collapse is collapse
    assert render_text.truncate is truncate
    assert render_text.is_web_url is is_http_url


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_truncate_always_fits_and_keeps_the_start(text: str, limit: int) -> None:
    line = collapse(text)
    short = truncate(line, limit)
    assert len(short) <= limit
    assert line.startswith(short.removesuffix("…").rstrip())
    assert collapse(line) == line
