"""The digest as mail clients show it: fluid, dark-mode safe, Outlook-ready, accessible.

A digest of the seeds and of a feed full of wide content (photos wider than the email, long
links, an unbreakable URL and word, a table) goes through the real pipeline into the test SMTP
server. Its HTML part opens in a real headless Chromium at 320, 375 and 600 px, with its
``<style>`` block and without it (as clients that drop ``<style>`` show it), in light and in
emulated dark mode: nothing overflows sideways or is cut off, the headlines, the unsubscribe
link and the postal address are visible, and every text passes WCAG AA contrast on its computed
colors. The text part keeps lines within 78 characters except URLs, and writes links as URLs.
Properties, not pixels; screenshots go to ``tests/_artifacts/`` for a human to look at.
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cssutils
import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select

from newsletter import app
from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.models import Article
from newsletter.personalization import TokenSet
from newsletter.render import render_digest
from newsletter.render_body import fit_body
from newsletter.render_text import html_to_text
from newsletter.sources.sanitize import sanitize_html
from newsletter.store.schema import articles as article_rows
from newsletter.store.schema import digest_articles
from newsletter.subscribers import add_subscriber
from tests import wire
from tests.browser import chromium, emulate, page_screenshot
from tests.conftest import SEEDS, FrozenClock, clear_newsletter_env
from tests.feed_server import FeedServer, Handler, Route
from tests.smtp_servers import SmtpTestServer

FIXTURES = Path(__file__).parent / "email_fixtures"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
BASE_URL = "https://news.example.org"
POSTAL_ADDRESS = "Harbour Press Ltd, 12 Quay Street, 4021 Porthaven"
COLUMN_WIDTH = 534  # the template's content column: 600 - 2 x 1px border - 2 x 32px padding
WIDE_IMAGE = (1200, 400)
SMALL_IMAGE = (48, 48)
WIDTHS = (320, 375, 600)
TEXT_LINE_LIMIT = 78
AA_NORMAL, AA_LARGE = 4.5, 3.0
MIN_SMALL_PRINT_PX = 14  # footer and meta text
GENERIC_LINK_TEXTS = {"read more", "more", "click here", "here", "link", "this", "continue"}

_SINGLE_URL_LINE = re.compile(r"\s*\(?(?:https?://|mailto:)\S+")


# --- WCAG 2.x contrast ------------------------------------------------------------------


def parse_color(value: str) -> tuple[float, float, float, float]:
    """``#rgb``, ``#rrggbb``, ``rgb(r, g, b)`` or ``rgba(r, g, b, a)`` -> (r, g, b, alpha)."""
    value = value.strip().lower()
    if value.startswith("#"):
        digits = value[1:]
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        red, green, blue = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
        return float(red), float(green), float(blue), 1.0
    found = re.fullmatch(r"rgba?\(([^)]*)\)", value)
    if not found:
        raise ValueError(f"not a color: {value!r}")
    parts = [float(p) for p in re.split(r"[,\s/]+", found[1].strip()) if p]
    return parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else 1.0


def relative_luminance(color: str) -> float:
    """WCAG 2.x relative luminance of an opaque sRGB color."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue, _ = parse_color(color)
    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2.x contrast ratio (1 to 21) of two opaque colors, in either order."""
    lighter, darker = sorted(
        (relative_luminance(foreground), relative_luminance(background)), reverse=True
    )
    return (lighter + 0.05) / (darker + 0.05)


def required_ratio(font_px: float, weight: int) -> float:
    """AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold)."""
    large = font_px >= 24 or (font_px >= 18.66 and weight >= 700)
    return AA_LARGE if large else AA_NORMAL


@pytest.mark.parametrize(
    ("foreground", "background", "expected"),
    [
        ("#000000", "#ffffff", 21.0),  # the extremes
        ("#ffffff", "#ffffff", 1.0),
        ("#767676", "#ffffff", 4.54),  # the lightest grey passing AA on white (WebAIM)
        ("#777777", "#ffffff", 4.48),  # one step lighter fails
        ("#0000ff", "#ffffff", 8.59),  # pure blue on white (WebAIM)
        ("#ff0000", "#ffffff", 4.0),  # pure red on white (WebAIM)
        ("rgb(0, 0, 255)", "#fff", 8.59),
    ],
)
def test_contrast_ratio_matches_known_wcag_values(
    foreground: str, background: str, expected: float
) -> None:
    assert contrast_ratio(foreground, background) == pytest.approx(expected, abs=0.01)
    assert contrast_ratio(background, foreground) == pytest.approx(expected, abs=0.01)


def test_required_ratio_for_large_and_normal_text() -> None:
    assert required_ratio(16, 400) == AA_NORMAL
    assert required_ratio(24, 400) == AA_LARGE
    assert required_ratio(19, 700) == AA_LARGE
    assert required_ratio(19, 600) == AA_NORMAL


# --- one digest through the real pipeline -----------------------------------------------


@dataclass(frozen=True)
class SentDigest:
    message: EmailMessage
    html: str
    text: str
    titles: tuple[str, ...]  # of the articles in the digest, from the database
    unsubscribe_url: str
    folder: Path  # where the HTML variants are written for the browser


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-color PNG: the wide photo has a real natural width for the browser."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = (b"\x00" + bytes(rgb) * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _serve(body: bytes, content_type: str) -> Route:
    def route(handler: Handler) -> None:
        handler.reply(200, body, {"Content-Type": content_type})

    return route


def _digest_titles(ctx: Context, digest_id: int) -> tuple[str, ...]:
    with ctx.store.atomic() as conn:
        rows = conn.execute(
            select(article_rows.c.title)
            .join(digest_articles, digest_articles.c.article_id == article_rows.c.id)
            .where(digest_articles.c.digest_id == digest_id)
            .order_by(digest_articles.c.position)
        )
        return tuple(title for (title,) in rows)


@pytest.fixture(scope="module")
def images() -> Iterator[FeedServer]:
    """Serves the feed and its images; stays up while the browser loads them."""
    with FeedServer() as server:
        server.routes["/quay-wide.png"] = _serve(_png(*WIDE_IMAGE, (40, 90, 140)), "image/png")
        server.routes["/pier-small.png"] = _serve(_png(*SMALL_IMAGE, (200, 120, 40)), "image/png")
        feed = (FIXTURES / "feed_with_wide_content.xml").read_text(encoding="utf-8")
        feed = feed.replace("{images}", server.url("").rstrip("/"))
        server.routes["/feed.xml"] = _serve(feed.encode(), "application/rss+xml")
        yield server


@pytest.fixture(scope="module")
def sent(images: FeedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentDigest]:
    """The seeds and the wide-content feed, sent to one subscriber and received over SMTP."""
    folder = tmp_path_factory.mktemp("email-rendering")
    with pytest.MonkeyPatch.context() as patch, SmtpTestServer() as smtp:
        clear_newsletter_env(patch)
        config = load_settings(
            None,
            store={"url": f"sqlite:///{folder / 'newsletter.db'}"},
            sources={
                "articles_dir": str(SEEDS),
                "feeds": [{"url": images.url("/feed.xml"), "name": "Harbour Wire"}],
            },
            digest={"max_age_days": 36500},
            newsletter={"postal_address": POSTAL_ADDRESS},
            web={"secret": "test-secret-0123456789abcdef", "base_url": BASE_URL},
            smtp={"port": smtp.port},
        )
        ctx = Context.open(config, clock=FrozenClock(NOW))
        try:
            add_subscriber(ctx.store, "ada@example.org", "Ada Lovelace", now=NOW)
            summary = app.send_now(ctx)
            assert summary.report is not None and summary.report.sent == 1
            assert summary.digest_id is not None
            titles = _digest_titles(ctx, summary.digest_id)
        finally:
            ctx.close()
        [message] = smtp.messages()
    unsubscribe = message["List-Unsubscribe"].split(">")[0].lstrip("<")
    yield SentDigest(
        message,
        wire.body(message, "html"),
        wire.body(message, "plain"),
        titles,
        unsubscribe,
        folder,
    )


def _without_style(html: str) -> str:
    """The HTML as clients that drop ``<style>`` keep it: inline styles only."""
    doc = lxml.html.document_fromstring(html)
    for style in doc.xpath("//style"):
        style.drop_tree()
    return lxml.html.tostring(doc, doctype="<!DOCTYPE html>", encoding="unicode")


def test_the_sent_digest_has_the_wide_content_to_test_with(sent: SentDigest) -> None:
    assert "Harbour plan: the new quay in pictures" in " ".join(sent.titles)
    assert len(sent.titles) >= 5
    doc = lxml.html.document_fromstring(sent.html)
    assert len(doc.xpath("//img")) == 3
    assert doc.xpath("//style")  # so the variant without it differs
    assert not lxml.html.document_fromstring(_without_style(sent.html)).xpath("//style")


# --- in Chromium: widths x with/without <style> x light/dark ------------------------------

# Everything measured in one pass: what overflows, what is visible, the computed colors of every
# text. An element is clipped when it sticks out of the viewport or of an ancestor that hides
# overflow (the card does), which scrollWidth alone would not show.
_MEASURE = r"""
const [titles, unsubscribeUrl, address] = arguments;
const vw = window.innerWidth;
function clipped(el) {
  const r = el.getBoundingClientRect();
  if (r.left < -0.5 || r.right > vw + 0.5) return true;
  for (let a = el.parentElement; a; a = a.parentElement) {
    const s = getComputedStyle(a);
    if (s.overflowX === 'visible') continue;
    const ar = a.getBoundingClientRect();
    if (r.left < ar.left - 0.5 || r.right > ar.right + 0.5) return true;
  }
  return false;
}
function shown(el) {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 &&
    el.checkVisibility({opacityProperty: true, visibilityProperty: true}) && !clipped(el);
}
function background(el) {
  for (let a = el; a; a = a.parentElement) {
    const c = getComputedStyle(a).backgroundColor;
    const alpha = c.startsWith('rgba') ? parseFloat(c.split(',')[3]) : 1;
    if (alpha > 0) return c;
  }
  return null;
}
const headings = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')];
const texts = [];
for (const el of document.body.querySelectorAll('*')) {
  const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim());
  if (!own.length) continue;
  if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
  const s = getComputedStyle(el);
  texts.push({
    text: own.map(n => n.textContent.trim()).join(' ').slice(0, 60),
    color: s.color, background: background(el), size: parseFloat(s.fontSize),
    weight: parseInt(s.fontWeight, 10), clipped: clipped(el),
    smallPrint: !!el.closest('.footer, .meta, .eyebrow'),
  });
}
const links = [...document.querySelectorAll('a')];
return {
  innerWidth: vw,
  scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
  pageBackground: background(document.body),
  headlines: titles.map(t => headings.filter(h => h.textContent.trim() === t).some(shown)),
  unsubscribe: links.filter(a => a.getAttribute('href') === unsubscribeUrl).some(shown),
  address: [...document.querySelectorAll('p, td')]
    .filter(e => e.textContent.trim() === address).some(shown),
  images: [...document.images].map(i => {
    const cell = i.closest('td'), s = getComputedStyle(cell);
    const column = cell.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
    return {natural: i.naturalWidth, width: i.getBoundingClientRect().width, column: column,
            clipped: clipped(i)};
  }),
  texts: texts,
};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _open(browser: WebDriver, sent: SentDigest, *, width: int, style: bool, scheme: str) -> Any:
    name = f"email_{width}_{'style' if style else 'inline'}_{scheme}"
    page = sent.folder / f"{name}.html"
    page.write_text(sent.html if style else _without_style(sent.html), encoding="utf-8")
    emulate(browser, width=width, color_scheme=scheme)
    browser.get(page.as_uri())  # returns after the load event: images are in
    measured = browser.execute_script(_MEASURE, sent.titles, sent.unsubscribe_url, POSTAL_ADDRESS)
    page_screenshot(browser, name)
    return measured


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("style", [True, False], ids=["with-style", "without-style"])
@pytest.mark.parametrize("width", WIDTHS)
def test_fits_the_width_shows_what_matters_and_stays_readable(
    browser: WebDriver, sent: SentDigest, width: int, style: bool, scheme: str
) -> None:
    page = _open(browser, sent, width=width, style=style, scheme=scheme)

    assert page["innerWidth"] == width
    assert page["scrollWidth"] <= page["innerWidth"]  # no sideways scrolling
    hidden = [t for t, ok in zip(sent.titles, page["headlines"], strict=True) if not ok]
    assert not hidden
    assert page["unsubscribe"] and page["address"]
    assert [i["natural"] for i in page["images"]] == [WIDE_IMAGE[0], WIDE_IMAGE[0], SMALL_IMAGE[0]]
    for image in page["images"]:
        assert not image["clipped"] and image["width"] <= image["column"] + 0.5
    assert page["images"][2]["width"] == SMALL_IMAGE[0]  # a small image keeps its size
    cut_off = [t["text"] for t in page["texts"] if t["clipped"]]
    assert not cut_off
    for text in page["texts"]:
        background = text["background"] or "#ffffff"  # none set: the default white canvas
        ratio = contrast_ratio(text["color"], background)
        needed = required_ratio(text["size"], text["weight"])
        assert ratio >= needed, f"{text['text']!r}: {text['color']} on {background} {ratio:.2f}"
        if text["smallPrint"]:
            assert text["size"] >= MIN_SMALL_PRINT_PX, text["text"]
    page_is_dark = relative_luminance(page["pageBackground"]) < 0.05
    assert page_is_dark == (scheme == "dark" and style)  # dark colors come from the <style> block


@pytest.mark.browser
def test_links_say_where_they_go(browser: WebDriver, sent: SentDigest) -> None:
    emulate(browser, width=600)
    page = sent.folder / "email_links.html"
    page.write_text(sent.html, encoding="utf-8")
    browser.get(page.as_uri())
    names: dict[str, set[str]] = {}
    for link in browser.find_elements(By.CSS_SELECTOR, "a"):
        if link.find_elements(By.XPATH, "ancestor::div[contains(@class, 'body')]"):
            continue  # feed content: its link texts are the publisher's
        name = " ".join(link.accessible_name.split())  # as assistive technology reads it
        assert name.lower().strip(" :→") not in GENERIC_LINK_TEXTS, name
        assert link.text.strip(" →\xa0").lower() in name.lower()  # the visible text is in it
        names.setdefault(name, set()).add(link.get_attribute("href") or "")
    assert all(len(hrefs) == 1 for hrefs in names.values()), names  # one name, one target
    read_more = [name for name in names if name.startswith("Read more: ")]
    assert read_more and all(name.removeprefix("Read more: ") in sent.titles for name in read_more)


# --- the markup: Outlook, dark mode hooks, images, headings (no browser needed) ------------


def _style_rules(html: str) -> tuple[list[Any], list[Any]]:
    """The top-level style rules and those inside ``@media (prefers-color-scheme: dark)``."""
    doc = lxml.html.document_fromstring(html)
    sheet = cssutils.parseString("\n".join(s.text or "" for s in doc.xpath("//head/style")))
    plain, dark = [], []
    for rule in sheet:
        if rule.type == rule.STYLE_RULE:
            plain.append(rule)
        elif rule.type == rule.MEDIA_RULE and "prefers-color-scheme: dark" in rule.media.mediaText:
            dark.extend(r for r in rule if r.type == r.STYLE_RULE)
    return plain, dark


def _selectors_setting(rules: list[Any], prop: str, prefix: str = "") -> dict[str, str]:
    found = {}
    for rule in rules:
        value = rule.style.getPropertyValue(prop)
        for selector in rule.selectorList:
            text = selector.selectorText
            if value and text.startswith(prefix):
                found[text.removeprefix(prefix).strip()] = value
    return found


def test_every_color_has_a_dark_mode_counterpart_and_outlook_app_hooks(sent: SentDigest) -> None:
    doc = lxml.html.document_fromstring(sent.html)
    meta = {m.get("name"): m.get("content") for m in doc.xpath("//meta[@name]")}
    assert meta["color-scheme"] == "light dark" and meta["supported-color-schemes"] == "light dark"
    plain, dark = _style_rules(sent.html)
    for prop, hook in (("color", "[data-ogsc]"), ("background-color", "[data-ogsb]")):
        light_selectors = {
            s for s in _selectors_setting(plain, prop) if not s.startswith(("[data-", ":root"))
        }
        dark_colors = _selectors_setting(dark, prop)
        assert light_selectors <= set(dark_colors), light_selectors - set(dark_colors)
        assert _selectors_setting(plain, prop, prefix=hook) == dark_colors


def test_outlook_gets_96_dpi_a_ghost_table_line_heights_and_a_padded_button(
    sent: SentDigest,
) -> None:
    conditional = "".join(re.findall(r"<!--\[if mso\]>(.*?)<!\[endif\]-->", sent.html, re.S))
    assert "<o:PixelsPerInch>96</o:PixelsPerInch>" in conditional
    assert re.search(r'<table role="presentation" width="600"', conditional)
    doc = lxml.html.document_fromstring(sent.html)
    assert 'xmlns:o="urn:schemas-microsoft-com:office:office"' in sent.html
    for element in doc.xpath("//*[contains(@style, 'line-height')]"):
        style = element.get("style").replace(" ", "")
        if "mso-hide:all" in style:
            continue  # the preheader, which Outlook does not show
        assert "mso-line-height-rule:exactly" in style, element.tag
    cells = doc.cssselect("td.button-cell")
    assert cells and all("mso-padding-alt:10px 18px" in c.get("style") for c in cells)
    for shell in doc.cssselect("table.shell"):  # fluid everywhere but the MSO ghost table
        assert shell.get("width") == "100%" and "max-width:600px" in shell.get("style")


def test_images_get_a_width_no_wider_than_the_column_and_no_height(sent: SentDigest) -> None:
    doc = lxml.html.document_fromstring(sent.html)
    widths = []
    for image in doc.xpath("//img"):
        assert image.get("height") is None
        widths.append(int(image.get("width")))  # a number, never "auto"
        style = image.get("style").replace(" ", "")
        assert "height:auto" in style and "max-width:100%" in style
        assert image.get("alt") is not None
    assert widths == [COLUMN_WIDTH, COLUMN_WIDTH, COLUMN_WIDTH]  # 1200, unknown, unknown


def _levels(html: str) -> list[tuple[int, str]]:
    doc = lxml.html.document_fromstring(html)
    return [
        (int(h.tag[1]), h.get("class") or "") for h in doc.iter("h1", "h2", "h3", "h4", "h5", "h6")
    ]


def _assert_outline(levels: list[tuple[int, str]], headline: int) -> None:
    assert levels[0] == (1, "title") and [lvl for lvl, _ in levels].count(1) == 1
    for (before, _), (after, _) in itertools.pairwise(levels):
        assert after <= before + 1  # never skips a level on the way down
    current = None
    for level, css_class in levels:
        if css_class == "headline":
            assert level == headline
            current = level
        elif current is not None and css_class not in ("section-title",):
            assert level > current  # a body heading sits below its article's headline


def test_headline_levels_in_the_sent_digest(sent: SentDigest) -> None:
    _assert_outline(_levels(sent.html), headline=2)


def test_headline_levels_with_sections_by_source() -> None:
    body = sanitize_html(
        "<h1>Plan</h1><p>Text.</p><h2>Photos</h2><h3>Detail</h3>", base_url=BASE_URL
    )
    articles = [
        Article(
            key=f"a{n}",
            title=f"Story {n}",
            published=NOW,
            summary="",
            source=source,
            origin="feed",
            body_html=body,
        )
        for n, source in enumerate(["Wire", "Gazette", "Wire"])
    ]
    config = load_settings(None, digest={"sections_by_source": True})
    digest = render_digest(articles, settings=config, now=NOW, tokens=TokenSet())
    levels = _levels(digest.html)
    assert [lvl for lvl, css in levels if css == "section-title"] == [2, 2]
    _assert_outline(levels, headline=3)


# --- the plain-text part ----------------------------------------------------------------


def long_lines(text: str) -> list[str]:
    """Lines over the limit that are not a single unbreakable URL."""
    return [
        line
        for line in text.splitlines()
        if len(line) > TEXT_LINE_LIMIT and not _SINGLE_URL_LINE.fullmatch(line)
    ]


def test_text_part_lines_fit_and_links_read_as_urls(sent: SentDigest) -> None:
    assert not long_lines(sent.text)
    assert "](http" not in sent.text and "](mailto" not in sent.text
    joined = " ".join(sent.text.split())
    assert (
        "full report on the quay renewal "
        "(https://harbour.example.org/plans/2026/quay-renewal-full-report-with-appendices.pdf)"
    ) in joined
    assert "with https://harbour.example.org/ as its home" in joined  # a bare URL once
    assert sent.unsubscribe_url in sent.text.splitlines()  # on a line of its own
    assert any(len(line) > TEXT_LINE_LIMIT for line in sent.text.splitlines())  # URLs stay whole


def test_html_to_text_writes_links_as_text_then_url() -> None:
    link = '<p>See <a href="https://x.org/a?b=1&amp;c=2">the <b>site</b></a>.</p>'
    assert html_to_text(link) == "See the site (https://x.org/a?b=1&c=2)."
    assert html_to_text('<p><a href="https://x.org/">https://x.org/</a></p>') == "https://x.org/"
    assert html_to_text('<p><a href="mailto:a@x.org">a@x.org</a></p>') == "a@x.org"
    assert html_to_text('<p><a href="mailto:a@x.org">write</a></p>') == "write (mailto:a@x.org)"


_words = st.text(
    alphabet=st.characters(categories=("L", "N", "P", "S")),
    min_size=1,
    max_size=24,
)
_phrases = st.lists(_words, min_size=1, max_size=30).map(" ".join)
_urls = st.builds(
    lambda host, path: f"https://{host}.example.org/{path}",
    st.from_regex(r"[a-z]{1,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9/_-]{0,160}", fullmatch=True),
)


@st.composite
def _feed_html(draw: st.DrawFn) -> str:
    """Feed-like HTML: paragraphs, headings, lists and links with untrusted text and URLs."""
    blocks = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["p", "h2", "ul", "img"]))
        if kind == "img":
            width = draw(st.one_of(st.none(), st.integers(2, 3000)))
            size = f' width="{width}"' if width else ""
            blocks.append(f'<img src="{draw(_urls)}"{size} alt="x">')
            continue
        text = draw(_phrases)
        link = f'<a href="{draw(_urls)}">{draw(_phrases)}</a>'
        inner = f"{text} {link}" if draw(st.booleans()) else text
        blocks.append(f"<ul><li>{inner}</li></ul>" if kind == "ul" else f"<{kind}>{inner}</{kind}>")
    return "".join(blocks)


@settings(max_examples=60, deadline=None)
@given(
    articles=st.lists(
        st.tuples(_phrases, _phrases, st.one_of(st.none(), _urls), _feed_html()),
        min_size=1,
        max_size=4,
    )
)
def test_any_articles_give_fitting_text_lines_and_column_wide_images(
    articles: list[tuple[str, str, str | None, str]],
) -> None:
    items = [
        Article(
            key=f"k{n}",
            title=title,
            published=NOW,
            summary=summary,
            url=url,
            source="Wire",
            origin="feed",
            body_html=sanitize_html(body, base_url=BASE_URL),
        )
        for n, (title, summary, url, body) in enumerate(articles)
    ]
    digest = render_digest(items, settings=load_settings(None), now=NOW, tokens=TokenSet())
    assert not long_lines(digest.text)
    assert "](http" not in digest.text
    for article in items:
        if article.url:
            assert article.url in digest.text
    for image in lxml.html.document_fromstring(digest.html).xpath("//img"):
        assert 0 < int(image.get("width")) <= COLUMN_WIDTH and image.get("height") is None


_tag_soup = st.lists(
    st.sampled_from(
        [
            "<h1>", "</h1>", "<h2>", "<h3>", "</h3>", "<h4>", "<h5>", "<h6>", "</h6>", "<p>",
            "</p>", "text", " ", "<a href='https://x.org/'>", "</a>",
            "<img src='https://x.org/a.png' width='900' height='300'>",
            "<img src=https://x.org/b.png height=10>", "<img width=abc src=https://x.org/c>",
            "<img src='https://x.org/d.png' width='120px'>", "<img src=javascript:x width=9>",
        ]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(html=st.one_of(st.text(max_size=300), _tag_soup), level=st.integers(2, 3))
def test_fit_body_on_any_sanitized_html(html: str, level: int) -> None:
    fitted = fit_body(
        sanitize_html(html, base_url=BASE_URL), headline_level=level, column_width=500
    )
    tags = _StartTags()
    tags.feed(fitted)
    tags.close()
    for tag, attributes in tags.found:
        if re.fullmatch(r"h[1-6]", tag):
            assert int(tag[1]) > level
        if tag == "img":
            assert 0 < int(attributes["width"] or "") <= 500 and "height" not in attributes


class _StartTags(HTMLParser):
    """Every start tag with its attributes (the stdlib parser takes any text, lxml does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))
