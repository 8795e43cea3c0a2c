"""The size promise: every sent digest fits ``[digest] max_html_bytes``, nothing is lost.

Through the real pipeline (folder and feed, SQLite, SMTP to a test server on loopback), with a
subscriber holding the longest name and address there can be, the received HTML part is
measured once the unsubscribe link is swapped for the longest one; the carried-over articles
go out in later digests exactly once. Hypothesis drives the render stage with generated
article counts, sizes and titles, for our template and a much heavier one.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter import app
from newsletter.app import Context
from newsletter.config import load_settings
from newsletter.models import Article, SizeStep
from newsletter.personalization import TokenSet
from newsletter.render import render_digest
from newsletter.store.schema import articles as article_rows
from newsletter.store.schema import digest_articles
from newsletter.subscribers import add_subscriber
from tests import longest_values as longest
from tests import wire
from tests.admin_login import operator_client
from tests.conftest import FrozenClock
from tests.feed_server import FeedServer, Handler, Route
from tests.smtp_servers import SmtpTestServer

FIXTURES = Path(__file__).parent / "render_fixtures"
NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
BASE_URL = "https://news.example.org"
MAX_DIGESTS = 40  # the send loop below always ends well before this
LOREM = "Harbour works continue through the winter while the council debates the budget. "


# --- the whole pipeline ------------------------------------------------------------------


def _write_folder(folder: Path, count: int) -> None:
    """``count`` Markdown articles, every tenth one huge, titles with markup characters."""
    folder.mkdir()
    for n in range(count):
        paragraphs = 400 if n % 10 == 0 else 8 + n % 20
        body = "\n\n".join(f"Paragraph {p} of story {n}. {LOREM * 3}" for p in range(paragraphs))
        day = NOW - timedelta(hours=3 * n + 1)
        url = f"url: https://news.example.org/folder/{n}\n" if n % 3 == 0 else ""
        (folder / f"story-{n:03d}.md").write_text(
            f"---\ntitle: 'Story {n}: ports & <harbours> \"quoted\"'\n"
            f"date: {day.isoformat()}\n{url}---\n\n{body}\n",
            encoding="utf-8",
        )


def _feed(count: int) -> bytes:
    """An RSS feed of ``count`` long entries with full HTML content."""
    items = []
    for n in range(count):
        published = NOW - timedelta(hours=2 * n + 2)
        content = "".join(
            f"<p>Entry {n}, part {p}: <b>{LOREM}</b> <a href='https://feed.example.org/{n}'>"
            f"more</a></p>"
            for p in range(10 + n % 40)
        )
        items.append(
            f"<item><title>Feed entry {n} &amp; its long headline about the harbour</title>"
            f"<link>https://feed.example.org/entries/{n}</link>"
            f"<guid>entry-{n}</guid>"
            f"<pubDate>{published.strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate>"
            f"<description>{html.escape(LOREM * 4)}</description>"
            f"<content:encoded><![CDATA[{content}]]></content:encoded></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        "<channel><title>Harbour Feed</title><link>https://feed.example.org/</link>"
        "<description>Long entries</description>" + "".join(items) + "</channel></rss>"
    ).encode()


def _served_once(body: bytes) -> Route:
    """The feed with an ETag: later fetches get 304, so only the first one is parsed."""

    def route(handler: Handler) -> None:
        if handler.headers.get("If-None-Match") == '"v1"':
            handler.reply(304, b"", {"ETag": '"v1"'})
        else:
            handler.reply(200, body, {"Content-Type": "application/rss+xml", "ETag": '"v1"'})

    return route


def _with_longest_link(message: EmailMessage, body: str, *, escaped: bool) -> str:
    """The received body as the subscriber with the longest unsubscribe link would get it."""
    sent = message["List-Unsubscribe"].split(">")[0].lstrip("<")
    replacement = longest.unsubscribe_url(BASE_URL)
    if escaped:
        sent, replacement = html.escape(sent, quote=True), html.escape(replacement, quote=True)
    assert sent in body
    return body.replace(sent, replacement)


def _digest_keys(ctx: Context, digest_id: int) -> list[str]:
    with ctx.store.atomic() as conn:
        rows = conn.execute(
            select(article_rows.c.key)
            .join(digest_articles, digest_articles.c.article_id == article_rows.c.id)
            .where(digest_articles.c.digest_id == digest_id)
            .order_by(digest_articles.c.position)
        )
        return [key for (key,) in rows]


def _all_keys(ctx: Context) -> set[str]:
    with ctx.store.atomic() as conn:
        return set(conn.execute(select(article_rows.c.key)).scalars())


def _send_until_nothing_new(
    ctx: Context, smtp_server: SmtpTestServer, clock: FrozenClock, limit: int
) -> list[list[str]]:
    """Send digests until none is left; check each received one; the keys of each."""
    carried: list[list[str]] = []
    for _ in range(MAX_DIGESTS):
        summary = app.send_now(ctx)
        if summary.report is None:
            assert summary.skipped_reason == "no new articles since the last digest"
            return carried
        assert summary.report.sent == 1 and summary.digest_id is not None
        message = smtp_server.messages()[-1]
        received_html = _with_longest_link(message, wire.body(message, "html"), escaped=True)
        received_text = _with_longest_link(message, wire.body(message, "plain"), escaped=False)
        assert html.escape(longest.NAME) in received_html
        assert html.escape(longest.EMAIL) in received_html
        assert longest.size(received_html) <= limit
        assert longest.size(received_text) <= limit
        carried.append(_digest_keys(ctx, summary.digest_id))
        clock.advance(minutes=1)
    raise AssertionError(f"still sending after {MAX_DIGESTS} digests")


@pytest.fixture
def feed_server() -> FeedServer:
    with FeedServer() as server:
        yield server


@pytest.mark.parametrize(
    ("templates", "files", "entries"),
    [(None, 110, 90), ("heavy", 30, 30)],  # the heavy template carries fewer per digest
)
def test_hundreds_of_long_articles_go_out_under_the_limit_each_exactly_once(
    make_context: Callable[..., Context],
    smtp_server: SmtpTestServer,
    feed_server: FeedServer,
    clock: FrozenClock,
    tmp_path: Path,
    templates: str | None,
    files: int,
    entries: int,
) -> None:
    folder = tmp_path / "articles"
    _write_folder(folder, files)
    feed_server.routes["/long.xml"] = _served_once(_feed(entries))
    digest: dict[str, Any] = {"max_articles": 1000}
    if templates:
        digest["templates_dir"] = str(FIXTURES / templates)
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={"articles_dir": str(folder), "feeds": [{"url": feed_server.url("/long.xml")}]},
        digest=digest,
        web={"base_url": BASE_URL},
    )
    add_subscriber(ctx.store, longest.EMAIL, longest.NAME, now=clock())

    per_digest = _send_until_nothing_new(
        ctx, smtp_server, clock, ctx.settings.digest.max_html_bytes
    )

    assert len(per_digest) >= 3  # the size limit spread them over several digests
    sent = [key for keys in per_digest for key in keys]
    assert len(sent) == len(set(sent))  # nothing twice
    assert set(sent) == _all_keys(ctx)  # nothing lost
    assert len(sent) == files + entries


def test_a_huge_single_article_goes_out_reduced_and_does_not_block_the_others(
    make_context: Callable[..., Context],
    smtp_server: SmtpTestServer,
    clock: FrozenClock,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "huge.md").write_text(
        "---\ntitle: The longest report\ndate: 2026-11-25\nsummary: The short version.\n---\n\n"
        + "\n\n".join(f"Section {n}. {LOREM * 4}" for n in range(2000)),
        encoding="utf-8",
    )
    (folder / "small.md").write_text(
        "---\ntitle: A small note\ndate: 2026-11-24\n---\n\nThe whole small note.\n",
        encoding="utf-8",
    )
    ctx = make_context(smtp={"port": smtp_server.port}, sources={"articles_dir": str(folder)})
    add_subscriber(ctx.store, longest.EMAIL, longest.NAME, now=clock())

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 1
    [message] = smtp_server.messages()
    received = _with_longest_link(message, wire.body(message, "html"), escaped=True)
    assert longest.size(received) <= ctx.settings.digest.max_html_bytes
    assert "The longest report" in received and "The short version." in received
    assert "Section 1." not in received
    assert "The whole small note." in received
    assert summary.digest_id is not None
    assert len(_digest_keys(ctx, summary.digest_id)) == 2


def test_the_preview_says_how_many_articles_are_carried_over(
    make_context: Callable[..., Context], tmp_path: Path
) -> None:
    folder = tmp_path / "articles"
    _write_folder(folder, 120)
    ctx = make_context(sources={"articles_dir": str(folder)}, digest={"max_articles": 1000})
    upcoming, _ = app.preview_digest(ctx)
    assert upcoming is not None
    carried = len(upcoming.rendered.carried_over)
    assert carried > 0 and upcoming.rendered.size_step is SizeStep.CARRIED_OVER

    page = operator_client(ctx).get("/preview").text  # the preview is for operators

    assert f"({carried} articles carried over to the next digest)" in page


# --- the render stage, with generated articles --------------------------------------------

TITLE_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))
# Shared filler strings: a hundred 2 MB bodies cost one 2 MB string.
FILLERS = {words: "word " * words for words in (0, 1, 40, 400, 4_000, 40_000, 400_000)}


@st.composite
def generated_articles(draw: st.DrawFn) -> list[Article]:
    count = draw(st.integers(min_value=0, max_value=80))
    result = []
    for n in range(count):
        title = draw(st.text(TITLE_CHARS, min_size=1, max_size=60)) * draw(
            st.sampled_from([1, 1, 1, 20])
        )
        filler = FILLERS[draw(st.sampled_from(sorted(FILLERS)))]
        kind = draw(st.sampled_from(["paragraphs", "html", "none"]))
        result.append(
            Article(
                key=f"article-{n}",
                title=title,
                published=NOW - timedelta(minutes=draw(st.integers(0, 10_000))),
                summary=draw(st.sampled_from(["", "Short summary.", "A long summary. " * 80])),
                paragraphs=(f"Body {n} <&>", filler) if kind == "paragraphs" else (),
                body_html=f"<p>Body {n} &lt;&amp;&gt;</p><p>{filler}</p>"
                if kind == "html"
                else None,
                url=f"https://news.example.org/{n}" if draw(st.booleans()) else None,
                source=draw(st.sampled_from([None, "Wire", "A source & <name>"])),
            )
        )
    return result


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    articles=generated_articles(),
    limit=st.integers(min_value=25_000, max_value=120_000),
    sections=st.booleans(),
    templates=st.sampled_from([None, "heavy", "untitled"]),
)
def test_any_digest_fits_and_accounts_for_every_article(
    articles: list[Article], limit: int, sections: bool, templates: str | None
) -> None:
    digest_settings: dict[str, Any] = {"max_html_bytes": limit, "sections_by_source": sections}
    if templates:
        digest_settings["templates_dir"] = FIXTURES / templates
    config = load_settings(None, digest=digest_settings, web={"base_url": BASE_URL})
    tokens = TokenSet()

    digest = render_digest(articles, settings=config, now=NOW, tokens=tokens)

    sent_html = longest.fill(digest.html, tokens, base_url=BASE_URL, escaped=True)
    sent_text = longest.fill(digest.text, tokens, base_url=BASE_URL, escaped=False)
    assert longest.size(sent_html) <= limit
    assert longest.size(sent_text) <= limit
    keys = [a.key for a in articles]
    assert list(digest.article_keys) == [k for k in keys if k in digest.article_keys]
    assert sorted([*digest.article_keys, *digest.carried_over]) == sorted(keys)
    if digest.carried_over:  # only the oldest are left out
        assert digest.size_step is SizeStep.CARRIED_OVER
        published = {a.key: (a.published, a.key) for a in articles}
        assert max(published[k] for k in digest.carried_over) < min(
            published[k] for k in digest.article_keys
        )
    if articles:
        assert digest.article_keys  # something always goes out
