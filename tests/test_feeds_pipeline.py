"""Feeds alongside the folder, through the whole pipeline, against local HTTP and SMTP servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import app
from newsletter.app.sources import check_sources
from newsletter.subscribers import add_subscriber
from tests.feed_server import FeedServer, conditional, status
from tests.smtp_servers import SmtpTestServer

FERRIES_URL = "https://news.example.org/2024/03/ferries"


@pytest.fixture
def feed_server() -> FeedServer:
    with FeedServer() as server:
        server.routes["/rss"] = conditional(
            "rss2.xml", etag='"v1"', last_modified="Sat, 02 Mar 2024 10:00:00 GMT"
        )
        yield server


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / "ferries.md").write_text(
        "---\ntitle: Ferries are back\ndate: 2024-03-01\n"
        f"url: {FERRIES_URL}/\n---\n\nSame story.\n",
        encoding="utf-8",
    )
    (articles / "001_a1b2.txt").write_text(
        "date 2024-03-02\n\nThe harbour festival starts on Saturday. Entry is free.\n",
        encoding="utf-8",
    )
    return articles


def test_feed_and_folder_articles_go_out_once_each(
    make_context, smtp_server: SmtpTestServer, feed_server: FeedServer, folder: Path, clock
):
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={
            "articles_dir": str(folder),
            "feeds": [{"url": feed_server.url("/rss"), "name": "Harbour"}],
        },
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 1
    [message] = smtp_server.messages()
    text = " ".join(message.get_body(("plain",)).get_content().split())
    assert "Council approves the 2024 budget" in text
    assert "The harbour festival starts on Saturday" in text
    assert "the lighthouse is open on Sundays again" in text  # undated entry, dated when first seen
    # The same URL came from the folder and the feed: it goes out once.
    assert text.count(FERRIES_URL) == 1
    assert summary.articles == 4

    clock.advance(days=1)
    again = app.send_now(ctx)

    assert again.report is None and again.skipped_reason == "no new articles since the last digest"
    _, second = feed_server.seen("/rss")
    assert second.headers["if-none-match"] == '"v1"' and second.status == 304


def test_a_broken_feed_does_not_stop_the_digest(
    make_context, smtp_server: SmtpTestServer, feed_server: FeedServer, folder: Path, clock
):
    feed_server.routes["/gone"] = status(404)
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={"articles_dir": str(folder), "feeds": [{"url": feed_server.url("/gone")}]},
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 1
    assert any("/gone" in p and "404" in p for p in summary.problems)


def test_sources_check_reports_entries_new_and_problems(
    make_context, feed_server: FeedServer, folder: Path
):
    feed_server.routes["/gone"] = status(404)
    ctx = make_context(
        sources={
            "articles_dir": str(folder),
            "feeds": [
                {"url": feed_server.url("/rss"), "name": "Harbour"},
                {"url": feed_server.url("/gone")},
            ],
        }
    )

    folder_check, harbour, gone = check_sources(ctx)

    assert (folder_check.entries, folder_check.new, folder_check.ok) == (2, 2, True)
    assert (harbour.name, harbour.entries, harbour.new) == ("Harbour", 3, 3)
    assert not gone.ok and "404" in gone.problems[-1]
    # Checking stores nothing: the next real run still sees everything as new.
    assert check_sources(ctx)[1].new == 3


def test_a_missing_articles_folder_is_reported_and_the_feeds_still_go_out(
    make_context, smtp_server: SmtpTestServer, feed_server: FeedServer, tmp_path: Path, clock
):
    missing = tmp_path / "no-such-folder"
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={"articles_dir": str(missing), "feeds": [{"url": feed_server.url("/rss")}]},
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 1
    assert summary.articles == 3
    assert summary.problems == [
        f"{missing}: articles folder not found; create it or point [sources] articles_dir at one"
    ]
    [message] = smtp_server.messages()
    assert "Council approves the 2024 budget" in message.get_body(("plain",)).get_content()
