"""The render stage: articles -> RenderedDigest (subject, preheader, inlined HTML, text)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cssutils
import lxml.html
import pytest
from premailer import Premailer

from newsletter import render as render_module
from newsletter.config import Settings, load_settings
from newsletter.errors import TemplateError
from newsletter.models import Article, RenderedDigest, SizeStep
from newsletter.personalization import TokenSet
from newsletter.render import (
    HTML_TEMPLATE,
    TEXT_TEMPLATE,
    build_preheader,
    builtin_templates_dir,
    group_by_source,
    make_template_environment,
    render_digest,
    render_subject,
)
from newsletter.render_fit import Treatment, reduced
from newsletter.render_text import WIDTH, html_to_text, wrap
from tests import longest_values as longest

FIXTURES = Path(__file__).parent / "render_fixtures"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
HOSTILE_TITLE = 'Prices <script>alert("x")</script> & "quotes"'

ArticleFactory = Callable[..., Article]


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the test only, not from NEWSLETTER_* variables of the shell."""
    import os

    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def make_article() -> ArticleFactory:
    counter = iter(range(1, 1000))

    def make(**fields: Any) -> Article:
        n = next(counter)
        values: dict[str, Any] = {
            "key": f"article-{n}",
            "title": f"Article number {n}",
            "published": NOW - timedelta(days=n),
            "summary": f"Summary of article {n}.",
            "url": f"https://news.example.org/2026/article-{n}",
            "source": "Example Wire",
            "origin": "https://news.example.org/feed.xml",
        }
        values.update(fields)
        return Article(**values)

    return make


@pytest.fixture
def tokens() -> TokenSet:
    return TokenSet()


def settings(**digest: Any) -> Settings:
    return load_settings(None, digest=digest) if digest else load_settings(None)


def render(
    articles: list[Article], tokens: TokenSet, config: Settings | None = None
) -> RenderedDigest:
    return render_digest(articles, settings=config or settings(), now=NOW, tokens=tokens)


def parse(html: str) -> Any:
    return lxml.html.document_fromstring(html)


def style_of(element: Any) -> dict[str, str]:
    pairs = (item.split(":", 1) for item in element.get("style", "").split(";") if ":" in item)
    return {name.strip(): value.strip() for name, value in pairs}


@pytest.fixture
def mixed_articles(make_article: ArticleFactory) -> list[Article]:
    """A linked article, a plain-text full text, a sanitized-HTML full text."""
    return [
        make_article(title="Council approves cycling network"),
        make_article(
            title="Bakery wins award",
            url=None,
            paragraphs=("First paragraph & more.", "Second paragraph."),
            source="Town Gazette",
        ),
        make_article(
            title="Library extends hours",
            url=None,
            body_html=(
                "<p>Open until 10&nbsp;pm on weekdays &amp; Saturdays.</p>"
                '<ul><li>Rooms at <a href="https://library.example.org/rooms">the site</a></li>'
                "<li>Café until 9 pm</li></ul>"
            ),
            source=None,
            origin="seeds/library.md",
        ),
    ]


# --- HTML: inlining, responsiveness, structure ------------------------------------------


def test_css_is_inlined_and_the_container_is_fluid_up_to_600px(
    mixed_articles: list[Article], tokens: TokenSet
) -> None:
    doc = parse(render(mixed_articles, tokens).html)
    (card,) = doc.cssselect("table.card")
    assert style_of(card)["width"] == "100%" and style_of(card)["max-width"] == "600px"
    assert card.get("role") == "presentation"
    assert all(t.get("role") == "presentation" for t in doc.cssselect("table"))
    (button,) = doc.cssselect("a.button-link")
    assert style_of(button)["color"].lower() in ("#fff", "#ffffff")
    assert "font-family" in style_of(doc.cssselect("td.masthead")[0])


def test_media_query_stays_in_a_style_block_with_important(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    doc = parse(render([make_article()], tokens).html)
    css = "\n".join(style.text or "" for style in doc.cssselect("head style"))
    media = css[css.index("@media only screen and (max-width: 620px)") :]
    assert re.search(r"\.shell\s*\{\s*width:\s*100%\s*!important", media)


def test_document_language_title_and_article_structure(
    mixed_articles: list[Article], tokens: TokenSet
) -> None:
    config = load_settings(None, newsletter={"language": "de", "title": "Tagesbrief"})
    digest = render(mixed_articles, tokens, config)
    doc = parse(digest.html)
    assert doc.get("lang") == "de"
    assert doc.cssselect("h1.title")[0].text_content() == "Tagesbrief"
    assert doc.findtext(".//title") == digest.subject
    headlines = [h.text_content() for h in doc.cssselect("h2.headline")]
    assert headlines == [a.title for a in mixed_articles]
    # Linked article: title link and Read more button; the others carry their full text.
    links = [a.get("href") for a in doc.cssselect("h2.headline a")]
    assert links == [mixed_articles[0].url]
    assert [a.get("href") for a in doc.cssselect("a.button-link")] == [mixed_articles[0].url]
    assert [p.text_content() for p in doc.cssselect("div.body p")][:2] == [
        "First paragraph & more.",
        "Second paragraph.",
    ]
    assert doc.cssselect("div.body li a")[0].get("href") == "https://library.example.org/rooms"
    assert "25 November 2026 · Example Wire" in doc.cssselect("p.meta")[0].text_content()
    assert digest.article_keys == tuple(a.key for a in mixed_articles)
    assert digest.summaries_only is False


def test_footer_has_unsubscribe_link_and_postal_address(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = load_settings(None, newsletter={"postal_address": "Acme, 2 Main St, Springfield"})
    doc = parse(render([make_article()], tokens, config).html)
    footer = doc.cssselect("td.footer")[0]
    assert footer.cssselect("a")[0].get("href") == tokens.token("unsubscribe_url")
    assert "Acme, 2 Main St, Springfield" in footer.text_content()
    assert "You receive this because" in footer.text_content()


def test_hostile_title_is_escaped_in_html_and_plain_in_text(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    digest = render([make_article(title=HOSTILE_TITLE, summary="<b>bold</b> claim")], tokens)
    doc = parse(digest.html)
    assert doc.cssselect("script") == [] and doc.cssselect("b") == []
    assert "&lt;script&gt;" in digest.html
    assert doc.cssselect("h2.headline")[0].text_content() == HOSTILE_TITLE
    assert HOSTILE_TITLE in digest.text
    assert "<b>bold</b> claim" in digest.text


def test_only_http_urls_are_linked(make_article: ArticleFactory, tokens: TokenSet) -> None:
    article = make_article(url="javascript:alert(1)", paragraphs=("Full text.",))
    digest = render([article], tokens)
    assert "javascript:" not in digest.html
    assert "javascript:" not in digest.text
    assert "Full text." in digest.text


def test_preheader_is_hidden_and_built_from_titles(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    articles = [make_article(title=f"A headline about topic {n}") for n in range(8)]
    digest = render(articles, tokens)
    assert 60 <= len(digest.preheader) <= 140
    assert digest.preheader.startswith("A headline about topic 0 · A headline about topic 1")
    body = parse(digest.html).find("body")
    first = body[0]
    assert first.tag == "div" and first.text_content().startswith(digest.preheader)
    style = style_of(first)
    assert style["display"] == "none" and style["mso-hide"] == "all"
    assert style["max-height"] == "0" and style["overflow"] == "hidden"
    assert "\u200c\xa0" in first.text_content()  # the &zwnj;&nbsp; padding


def test_preheader_lengths(make_article: ArticleFactory) -> None:
    assert build_preheader([]) == ""
    long_title = make_article(title="word " * 60)
    assert len(build_preheader([long_title])) <= 140
    assert build_preheader([long_title]).endswith("…")
    single = make_article(title="Short", summary="A summary that adds context to the title.")
    assert build_preheader([single]) == "Short — A summary that adds context to the title."


# --- tokens -----------------------------------------------------------------------------


def test_builtin_tokens_survive_inlining(make_article: ArticleFactory, tokens: TokenSet) -> None:
    digest = render([make_article()], tokens)
    doc = parse(digest.html)
    assert f"Hello {tokens.token('name')}," in doc.cssselect("p.greeting")[0].text_content()
    assert tokens.token("email") in doc.cssselect("td.footer")[0].text_content()
    hrefs = [a.get("href") for a in doc.cssselect("a")]
    assert tokens.token("unsubscribe_url") in hrefs
    for field in ("name", "email", "unsubscribe_url"):
        assert tokens.token(field) in digest.text
    found = {m.group(1) for m in tokens.pattern.finditer(digest.html)}
    assert found == {"name", "email", "unsubscribe_url"}


def test_attr_and_href_tokens_survive_inlining(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = settings(templates_dir=FIXTURES / "attr_tokens")
    digest = render([make_article()], tokens, config)
    doc = parse(digest.html)
    city, email = tokens.token("attr_city"), tokens.token("email")
    hrefs = [a.get("href") for a in doc.cssselect("a")]
    assert hrefs == [
        f"https://weather.example.org/?city={city}&to={email}",
        f"mailto:{email}",
        tokens.token("unsubscribe_url"),
    ]
    paragraph = doc.cssselect("p.local")[0]
    assert paragraph.text_content() == f"Weather for {city}, {tokens.token('name')}"
    assert style_of(paragraph)["padding"] == "4px 8px"  # inlined, so premailer did run


# --- text part --------------------------------------------------------------------------


def test_text_part_is_readable_plain_text(mixed_articles: list[Article], tokens: TokenSet) -> None:
    text = render(mixed_articles, tokens).text
    for remnant in ("<", ">", "&nbsp;", "&amp;", "&#", "\xa0"):
        assert remnant not in text
    assert "THE DAILY DIGEST" in text and "26 November 2026" in text
    assert "Read more: https://news.example.org/2026/article-1" in text
    assert "First paragraph & more." in text
    assert "Open until 10 pm on weekdays & Saturdays." in text
    assert "https://library.example.org/rooms" in text
    assert f"Unsubscribe:\n{tokens.token('unsubscribe_url')}\n" in text  # a line of its own
    assert "Newsletter Ltd, 1 Example Street, 12345 Exampletown" in text
    assert text.endswith("\n") and "\n\n\n" not in text


def test_text_part_wraps_at_76_without_breaking_urls_or_tokens(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    long_url = "https://news.example.org/" + "-".join(["a-very-long-slug"] * 6)
    article = make_article(
        title="A title " * 15,
        url=long_url,
        summary="Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6,
    )
    text = render([article], tokens).text
    assert long_url in text
    for line in text.splitlines():
        assert len(line) <= WIDTH or "://" in line or tokens.nonce in line, line


def test_wrap_and_html_to_text_helpers() -> None:
    url = "https://example.org/" + "x" * 90
    assert url in wrap(f"see {url} now").splitlines()
    assert wrap("one\ntwo\n\n\nthree", indent="  ") == "  one two\n\n  three"
    text = html_to_text("<ul><li>" + "item " * 30 + "</li></ul><p>a&amp;b&nbsp;c</p>")
    lines = text.splitlines()
    assert lines[0].startswith("  * item") and lines[1].startswith("    item")
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[-1] == "a&b c"


# --- subject ----------------------------------------------------------------------------


def test_subject_is_rendered_from_the_setting(make_article: ArticleFactory) -> None:
    assert render_subject(
        "{{ title }}: {{ date.strftime('%d %B %Y') }}", title="Digest", date=NOW
    ) == ("Digest: 26 November 2026")
    subject = render_subject(
        "{{ articles|length }} new: {{ articles[0].title }}",
        title="Digest",
        date=NOW,
        articles=[make_article(title="Hello & <goodbye>")],
    )
    assert subject == "1 new: Hello & <goodbye>"  # plain text, not HTML-escaped


def test_subject_collapses_line_breaks(make_article: ArticleFactory, tokens: TokenSet) -> None:
    config = load_settings(
        None,
        newsletter={"title": "Daily\r\nBcc: victim@example.org"},
        digest={"subject": "{{ title }}\r\n\t {{ articles[0].title }}"},
    )
    digest = render([make_article(title="Evil\nSubject: x\r\n")], tokens, config)
    assert digest.subject == "Daily Bcc: victim@example.org Evil Subject: x"
    assert "\n" not in digest.subject and "\r" not in digest.subject


def test_subject_is_limited_to_150_characters() -> None:
    subject = render_subject("{{ title }}", title="word " * 80, date=NOW)
    assert len(subject) <= 150 and subject.endswith("…")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ nope }}", r"^digest\.subject setting, line 1: 'nope' is undefined$"),
        ("{{ title", r"^digest\.subject setting, line 1: .*"),
        ("{{ date.strftime(1) }}", r"^digest\.subject setting, line 1: TypeError: .*"),
    ],
)
def test_subject_errors_are_one_line_template_errors(source: str, expected: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_subject(source, title="Digest", date=NOW)
    assert re.match(expected, str(caught.value))
    assert "\n" not in str(caught.value)


# --- templates: environment, overrides, errors -------------------------------------------


def test_builtin_templates_dir_has_the_templates() -> None:
    folder = builtin_templates_dir()
    assert (folder / HTML_TEMPLATE).is_file() and (folder / TEXT_TEMPLATE).is_file()


def test_environment_escapes_html_but_not_text_templates() -> None:
    env = make_template_environment(None)
    assert env.undefined.__name__ == "StrictUndefined"
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert env.autoescape("digest.html.j2") is True  # type: ignore[operator]
    assert env.autoescape("page.html") is True  # type: ignore[operator]
    assert env.autoescape("digest.txt.j2") is False  # type: ignore[operator]
    unescaped = make_template_environment(None, autoescape=False)
    assert unescaped.from_string("{{ x }}").render(x="<b>") == "<b>"


def test_user_template_overrides_the_builtin_one(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = settings(templates_dir=FIXTURES / "override_text")
    digest = render([make_article(title="A & B <c>")], tokens, config)
    assert digest.text.startswith("CUSTOM TEXT for The Daily Digest: 1 article(s)")
    assert "* A & B <c>" in digest.text  # the text template is not autoescaped
    assert parse(digest.html).cssselect("table.card")  # the HTML still comes from the built-in


def test_undefined_variable_is_a_template_error_naming_file_and_line(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = settings(templates_dir=FIXTURES / "undefined_variable")
    with pytest.raises(TemplateError) as caught:
        render([make_article()], tokens, config)
    message = str(caught.value)
    assert "undefined_variable/digest.html.j2, line 5" in message
    assert "'no_such_variable' is undefined" in message
    assert "\n" not in message


def test_syntax_error_is_a_template_error_naming_file_and_line(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = settings(templates_dir=FIXTURES / "syntax_error")
    with pytest.raises(TemplateError, match=r"syntax_error/digest\.txt\.j2, line \d: .*endfor"):
        render([make_article()], tokens, config)


def test_missing_templates_dir_is_a_template_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="templates folder not found"):
        make_template_environment(tmp_path / "nope")


def test_missing_partial_is_a_template_error(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    config = settings(templates_dir=FIXTURES / "missing_partial")
    with pytest.raises(TemplateError) as caught:
        render([make_article()], tokens, config)
    message = str(caught.value)
    assert re.match(
        r".*missing_partial/digest\.html\.j2, line 3: template '_footer\.html\.j2' "
        r"not found in .*missing_partial, .*templates$",
        message,
    )


# --- sections, size fallback ------------------------------------------------------------


def test_sections_by_source_group_in_order_of_first_appearance(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    articles = [
        make_article(source="Wire"),
        make_article(source=None, origin="seeds/local.md"),
        make_article(source="Wire"),
        make_article(source="Gazette"),
    ]
    sections = group_by_source(articles)
    assert [(s.name, [a.key for a in s.articles]) for s in sections] == [
        ("Wire", [articles[0].key, articles[2].key]),
        ("seeds/local.md", [articles[1].key]),
        ("Gazette", [articles[3].key]),
    ]
    digest = render(articles, tokens, settings(sections_by_source=True))
    doc = parse(digest.html)
    assert [h.text_content() for h in doc.cssselect("h2.section-title")] == [
        "Wire",
        "seeds/local.md",
        "Gazette",
    ]
    headlines = [h.text_content() for h in doc.cssselect("h3.headline")]  # under the h2s
    assert headlines == [articles[i].title for i in (0, 2, 1, 3)]
    assert [line for line in digest.text.splitlines() if line in ("WIRE", "GAZETTE")] == [
        "WIRE",
        "GAZETTE",
    ]
    assert "seeds/local.md".upper() in digest.text


def test_flat_list_has_no_section_titles(make_article: ArticleFactory, tokens: TokenSet) -> None:
    doc = parse(render([make_article(), make_article(source="Other")], tokens).html)
    assert doc.cssselect("h2.section-title") == []


def sent_html_size(digest: RenderedDigest, tokens: TokenSet, config: Settings) -> int:
    base_url = config.web.base_url
    return longest.size(longest.fill(digest.html, tokens, base_url=base_url, escaped=True))


def sent_text_size(digest: RenderedDigest, tokens: TokenSet, config: Settings) -> int:
    base_url = config.web.base_url
    return longest.size(longest.fill(digest.text, tokens, base_url=base_url, escaped=False))


def test_oversized_digest_falls_back_to_summaries(
    make_article: ArticleFactory, tokens: TokenSet, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = tuple(f"Paragraph {n}: " + "lorem ipsum dolor " * 40 for n in range(12))
    articles = [make_article(url=None, paragraphs=long_text) for _ in range(3)]
    config = settings(max_html_bytes=20_000)
    assert len(render(articles, tokens, settings()).html.encode()) > 20_000
    with caplog.at_level(logging.INFO, logger="newsletter"):
        digest = render(articles, tokens, config)
    assert digest.size_step is SizeStep.SUMMARIES and digest.summaries_only is True
    assert digest.article_keys == tuple(a.key for a in articles) and digest.carried_over == ()
    assert sent_html_size(digest, tokens, config) <= 20_000
    assert "Paragraph 0:" not in digest.html and "Paragraph 0:" not in digest.text
    assert all(a.summary in digest.text for a in articles)
    assert [p.text_content() for p in parse(digest.html).cssselect("p.summary")] == [
        a.summary for a in articles
    ]
    assert "in brief" in parse(digest.html).cssselect("p.intro")[0].text_content()
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "max_html_bytes=20000" in record.getMessage()
    assert "3 as summaries" in record.getMessage()


def test_the_oldest_articles_become_headlines_before_any_is_left_out(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    articles = [make_article(summary=f"Summary {n}. " + "context " * 60) for n in range(40)]
    # The limit lies halfway between the digest as all summaries and as all headlines.
    roomy = settings(max_html_bytes=10_000_000)
    as_summaries = render([reduced(a, Treatment.SUMMARY) for a in articles], tokens, roomy)
    as_headlines = render([reduced(a, Treatment.HEADLINE) for a in articles], tokens, roomy)
    low, high = (sent_html_size(d, tokens, roomy) for d in (as_headlines, as_summaries))
    assert high - low > 20_000
    config = settings(max_html_bytes=(low + high) // 2)

    digest = render(articles, tokens, config)

    assert digest.size_step is SizeStep.HEADLINES and digest.carried_over == ()
    assert sent_html_size(digest, tokens, config) <= config.digest.max_html_bytes
    doc = parse(digest.html)
    with_summary = [
        a.title
        for a, cell in zip(articles, doc.cssselect("td.article-cell"), strict=True)
        if cell.cssselect("p.summary")
    ]
    kept = len(with_summary)
    assert 0 < kept < len(articles)
    assert with_summary == [a.title for a in articles[:kept]]  # the newest keep their summary
    assert [a.get("href") for a in doc.cssselect("a.button-link")] == [a.url for a in articles]


def test_articles_that_still_do_not_fit_are_carried_over_oldest_first(
    make_article: ArticleFactory, tokens: TokenSet, caplog: pytest.LogCaptureFixture
) -> None:
    articles = [make_article(summary="summary text " * 30) for _ in range(60)]
    shuffled = articles[1::2] + articles[0::2]  # the digest keeps the order it was given
    config = settings(max_html_bytes=30_000)
    with caplog.at_level(logging.INFO, logger="newsletter"):
        digest = render(shuffled, tokens, config)

    assert digest.size_step is SizeStep.CARRIED_OVER
    assert sent_html_size(digest, tokens, config) <= 30_000
    assert sent_text_size(digest, tokens, config) <= 30_000
    kept = len(digest.article_keys)
    assert 0 < kept < 60
    newest = {a.key for a in articles[:kept]}
    assert digest.article_keys == tuple(a.key for a in shuffled if a.key in newest)
    assert set(digest.carried_over) == {a.key for a in articles[kept:]}
    headlines = [h.text_content() for h in parse(digest.html).cssselect("h2.headline")]
    assert headlines == [a.title for a in shuffled if a.key in newest]
    assert "summary text" not in digest.html  # headline and link only
    (record,) = caplog.records
    assert f"{60 - kept} carried over to the next digest" in record.getMessage()


def test_a_single_article_over_the_limit_goes_out_as_its_summary(
    make_article: ArticleFactory, tokens: TokenSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    inlined: list[int] = []
    original = render_module.inline_css

    def recording(html: str) -> str:
        inlined.append(len(html.encode()))
        return original(html)

    monkeypatch.setattr(render_module, "inline_css", recording)
    huge = make_article(url=None, paragraphs=("word " * 400_000, "The end."), summary="In short.")
    others = [make_article(url=None, paragraphs=("Short text.",)) for _ in range(3)]
    config = settings()

    digest = render([*others[:1], huge, *others[1:]], tokens, config)

    assert digest.article_keys == (others[0].key, huge.key, others[1].key, others[2].key)
    assert sent_html_size(digest, tokens, config) <= config.digest.max_html_bytes
    assert "The end." not in digest.html and "In short." in digest.html
    assert digest.html.count("Short text.") == 3  # the others keep their full text
    assert digest.size_step is SizeStep.SUMMARIES
    assert inlined and max(inlined) < 2 * config.digest.max_html_bytes  # never the 2 MB body


def test_a_template_too_heavy_for_even_one_article_is_a_template_error(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    with pytest.raises(TemplateError) as caught:
        render([make_article()], tokens, settings(max_html_bytes=10_000))
    message = str(caught.value)
    assert message.startswith("the digest does not fit in digest.max_html_bytes=10000")
    assert "\n" not in message


def test_personal_tokens_inside_article_blocks_are_counted(
    make_article: ArticleFactory, tokens: TokenSet
) -> None:
    """The heavy template prints the address in every block: each one can grow by ~1 KB."""
    config = settings(templates_dir=FIXTURES / "heavy", max_html_bytes=60_000)
    digest = render([make_article() for _ in range(30)], tokens, config)
    assert digest.html.count(tokens.token("email")) > 2 * len(digest.article_keys)
    assert sent_html_size(digest, tokens, config) <= 60_000
    assert digest.carried_over  # the tokens are what pushed them out
    assert len(digest.html.encode()) < 45_000


# --- logging and cost ---------------------------------------------------------------------


def test_rendering_does_not_add_cssutils_log_handlers(
    mixed_articles: list[Article], tokens: TokenSet
) -> None:
    logger = logging.getLogger("CSSUTILS")
    render(mixed_articles, tokens)
    before = list(logger.handlers)
    render(mixed_articles, tokens)
    render(mixed_articles, tokens)
    assert logger.handlers == before
    assert cssutils.log.getEffectiveLevel() == logging.CRITICAL


def test_one_inline_for_a_digest_that_fits_and_two_for_one_that_does_not(
    make_article: ArticleFactory, tokens: TokenSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = Premailer.transform

    def counting(self: Premailer, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Premailer, "transform", counting)
    articles = [
        make_article(url=None if n % 2 else f"https://x.example/{n}", paragraphs=("text " * 200,))
        for n in range(10)
    ]
    assert render(articles, tokens).size_step is SizeStep.FULL
    assert len(calls) == 1

    calls.clear()
    many = [make_article(paragraphs=("text " * 2000,)) for _ in range(300)]
    assert render(many, tokens).size_step is SizeStep.CARRIED_OVER
    assert len(calls) <= 2
