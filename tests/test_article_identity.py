"""Article identity: one key builder, no two articles sharing a key, preview == send."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import FeedSettings, load_settings
from newsletter.sources.base import KEY_MAX_CHARS, Identity, article_key
from newsletter.sources.feed_entries import parse_feed
from newsletter.sources.folder import read_articles_dir
from newsletter.store.database import Store
from newsletter.store.schema import digest_articles
from tests.conftest import Run
from tests.smtp_servers import SmtpTestServer

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def scraped(day: int, lead: str) -> str:
    return f"date 2026-11-{day:02d}\n\n{lead}\n\nA second paragraph follows.\n"


# -- the key builder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "key"),
    [
        (Identity(guid="tag:example.org,2026:42", scope="https://a.example/feed"),
         "id:tag:example.org,2026:42"),
        (Identity(guid="https://a.example/p/42", scope="https://a.example/feed"),
         "id:https://a.example/p/42"),
        (Identity(guid="42", scope="https://a.example/feed"), "id:https://a.example/feed#42"),
        (Identity(guid="42", url="https://a.example/p/42"), "id:42"),
        (Identity(url="https://a.example/p/42", file_id="story"), "url:https://a.example/p/42"),
        (Identity(file_id="9f2c1ab3"), "file:9f2c1ab3"),
        (Identity(file_id="dup", file_kind="md"), "md:dup"),
    ],
)  # fmt: skip
def test_the_first_identity_set_makes_the_key(identity: Identity, key: str) -> None:
    assert article_key(identity) == key


def test_a_key_too_long_for_the_store_is_shortened_and_stays_unique() -> None:
    one = article_key(Identity(url="https://a.example/" + "x" * 900 + "1"))
    two = article_key(Identity(url="https://a.example/" + "x" * 900 + "2"))

    assert len(one) <= KEY_MAX_CHARS and len(two) <= KEY_MAX_CHARS
    assert one != two and one.startswith("url:https://a.example/xxx")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(
            Identity,
            guid=st.sampled_from(["", "1", "tag:x,2026:1"]),
            scope=st.sampled_from(["", "https://a.example/feed", "https://b.example/feed"]),
            url=st.sampled_from(["", "https://a.example/1", "https://b.example/1"]),
            file_id=st.sampled_from(["", "1", "story"]),
            file_kind=st.sampled_from(["file", "md"]),
            content=st.text(max_size=20),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_different_identities_never_share_a_key(pair: list[Identity]) -> None:
    first, second = pair

    def identity(i: Identity) -> tuple[str, ...]:  # what the key is built from, by priority
        if i.guid:
            global_guid = ":" in i.guid
            return ("id", i.guid, "" if global_guid else i.scope)
        if i.url:
            return ("url", i.url)
        if i.file_id:
            return (i.file_kind, i.file_id)
        return ("hash", i.content)

    if identity(first) != identity(second):
        assert article_key(first) != article_key(second)
    else:
        assert article_key(first) == article_key(second)


# -- files -----------------------------------------------------------------------------------


def test_two_files_with_one_id_and_other_text_are_a_conflict_naming_both(tmp_path: Path):
    first = write(tmp_path, "001_story.txt", scraped(24, "The ferry to Holm runs again."))
    second = write(tmp_path, "002_story.txt", scraped(25, "The bridge to Holm reopens."))

    result = read_articles_dir(tmp_path)

    assert [a.origin for a in result.articles] == [str(first)]
    assert [str(p) for p in result.problems] == [
        f"{second}: skipped: it has the same key (file:story) as {first} but other text; "
        "rename one of them (in NNN_<id>.txt the <id> identifies the article)"
    ]


def test_the_same_file_twice_is_one_article_and_no_problem(tmp_path: Path):
    text = scraped(24, "The ferry to Holm runs again.")
    first = write(tmp_path, "001_story.txt", text)
    second = write(tmp_path, "007_story.txt", text)

    result = read_articles_dir(tmp_path)

    assert [a.origin for a in result.articles] == [str(first)]
    assert result.problems == []
    assert [(d.article.origin, d.kept.origin) for d in result.duplicates] == [
        (str(second), str(first))
    ]


def test_a_text_file_beside_a_markdown_file_of_the_same_name_are_two_articles(tmp_path: Path):
    write(tmp_path, "dup.txt", scraped(24, "The ferry to Holm runs again."))
    write(tmp_path, "dup.md", "---\ntitle: The bridge reopens\ndate: 2026-11-25\n---\nYes.\n")

    result = read_articles_dir(tmp_path)

    assert result.problems == []
    assert sorted(a.key for a in result.articles) == ["file:dup", "md:dup"]


def test_two_feeds_with_the_same_plain_guid_give_two_articles() -> None:
    def entries(feed_url: str, title: str) -> list[str]:
        data = (
            "<rss version='2.0'><channel><title>T</title><item><guid isPermaLink='false'>1"
            f"</guid><title>{title}</title><pubDate>Mon, 23 Nov 2026 08:00:00 GMT</pubDate>"
            "</item></channel></rss>"
        ).encode()
        feed = FeedSettings(url=feed_url)
        return [a.key for a in parse_feed(data, feed=feed, base_url=feed_url, now=NOW).articles]

    first = entries("https://a.example/feed", "Ferries run again")
    second = entries("https://b.example/feed", "Bridge reopens")

    assert first == ["id:https://a.example/feed#1"]
    assert second == ["id:https://b.example/feed#1"]


# -- the dry run and the real send -----------------------------------------------------------

LISTED = re.compile(r"^  \d{4}-\d{2}-\d{2}  (?P<title>.+)$", re.MULTILINE)


def test_dry_run_lists_exactly_what_the_real_send_carries(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpTestServer
):
    folder = env / "articles"
    folder.mkdir()
    write(folder, "001_story.txt", scraped(20, "The ferry to Holm runs again after a repair."))
    write(folder, "002_story.txt", scraped(21, "The bridge to Holm reopens on Monday."))
    write(folder, "dup.txt", scraped(22, "Night buses return to the river line."))
    write(folder, "dup.md", "---\ntitle: The harbour market opens\ndate: 2026-11-23\n---\nYes.\n")
    write(folder, "003_market.txt", scraped(24, "The winter market opens on Saturday."))
    write(folder, "009_market.txt", scraped(24, "The winter market opens on Saturday."))
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(folder))
    assert run("subscribers", "add", "ada@example.org")[0] == 0

    code, checked, _ = run("sources", "check")
    assert code == 1  # the conflicting 002_story.txt is a problem
    assert f"{folder}: 4 entries, 4 new" in checked
    assert "002_story.txt: skipped: it has the same key (file:story)" in checked

    code, dry, _ = run("send-now", "--dry-run")
    assert code == 0, dry
    listed = LISTED.findall(dry)
    assert sorted(listed) == [
        "Night buses return to the river line",
        "The ferry to Holm runs again after a repair",
        "The harbour market opens",
        "The winter market opens on Saturday",
    ]

    code, sent, _ = run("send-now")
    assert code == 0, sent
    assert f"{len(listed)} articles" in sent
    [message] = smtp_server.messages()
    text = " ".join(message.get_body(("plain",)).get_content().split())
    for title in listed:
        assert title in text
    assert "The bridge to Holm reopens" not in text
    store = Store.open(load_settings().store.url)
    with store.atomic() as conn:
        assert len(conn.execute(digest_articles.select()).all()) == len(listed)

    code, again, _ = run("send-now", "--dry-run")
    assert "no new articles since the last digest" in again
