"""``sources list [--explain]``: every article found and its fate in the next digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import app
from newsletter.app.explain import Fate, explain_next_digest
from newsletter.subscribers import add_subscriber
from tests.conftest import Run
from tests.smtp_servers import SmtpTestServer


def scraped(day: str, lead: str) -> str:
    return f"date {day}\n\n{lead}\n\nMore details follow.\n"


def markdown(title: str, day: str, url: str) -> str:
    return f"---\ntitle: {title}\ndate: {day}\nurl: {url}\n---\nBody.\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    articles = tmp_path / "articles"
    articles.mkdir()
    (articles / "001_sent.txt").write_text(scraped("2026-11-24", "The ferry runs again."))
    (articles / "002_market.md").write_text(
        markdown("The market opens", "2026-11-24", "https://news.example.org/market")
    )
    return articles


def test_each_article_gets_its_fate(
    make_context, smtp_server: SmtpTestServer, folder: Path, clock
) -> None:
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={"articles_dir": str(folder), "max_article_bytes": 2048},
        digest={"max_age_days": 7, "max_articles": 2},
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    first = app.send_now(ctx)
    assert first.digest_id == 1 and first.articles == 2
    # What arrived since: two fresh articles, one older one over the cap of 2, one too old,
    # the market story again under another key, a file too big and a broken one.
    (folder / "003_bridge.txt").write_text(scraped("2026-11-26", "The bridge reopens on Monday."))
    (folder / "004_snow.txt").write_text(scraped("2026-11-25", "Snow is expected on Friday."))
    (folder / "005_capped.txt").write_text(scraped("2026-11-23", "The choir sings at noon."))
    (folder / "006_old.txt").write_text(scraped("2026-11-01", "The pool closed for repairs."))
    (folder / "007_again.md").write_text(
        markdown("The market opens again", "2026-11-25", "https://news.example.org/market/")
    )
    (folder / "008_big.txt").write_text(scraped("2026-11-25", "Big. " * 600))
    (folder / "009_broken.txt").write_text("no date here\n")

    fates = explain_next_digest(ctx)

    by_title = {f.article.title: (f.fate, f.reason) for f in fates if f.article}
    assert by_title == {
        "The bridge reopens on Monday": (Fate.NEXT, "goes into the next digest"),
        "Snow is expected on Friday": (Fate.NEXT, "goes into the next digest"),
        "The ferry runs again": (Fate.SENT, "already sent in digest 1"),
        "The market opens": (Fate.SENT, "already sent in digest 1"),
        "The pool closed for repairs": (
            Fate.TOO_OLD,
            "too old: published 2026-11-01, more than [digest] max_age_days = 7 days ago",
        ),
        "The market opens again": (
            Fate.SAME_URL,
            "same URL as an article already sent in digest 1",
        ),
        "The choir sings at noon": (
            Fate.OVER_CAP,
            "over the cap: at most [digest] max_articles = 2 per digest",
        ),
    }
    skipped = [f.reason for f in fates if f.article is None]
    assert [reason.split(": ", 2)[1] for reason in skipped] == [
        str(folder / "008_big.txt"),
        str(folder / "009_broken.txt"),
    ]
    assert all(reason.startswith("skipped: ") for reason in skipped)
    assert [f.fate for f in fates] == sorted((f.fate for f in fates), key=list(Fate).index)


def test_explain_agrees_with_the_send_and_stores_nothing(
    make_context, smtp_server: SmtpTestServer, folder: Path, clock
) -> None:
    ctx = make_context(smtp={"port": smtp_server.port}, sources={"articles_dir": str(folder)})
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    explained = explain_next_digest(ctx)
    assert explain_next_digest(ctx) == explained  # nothing was stored or sent
    summary = app.send_now(ctx)

    going = [f.article.key for f in explained if f.article and f.fate is Fate.NEXT]
    assert len(going) == summary.articles == 2


def test_sources_list_and_explain_on_the_command_line(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    (folder / "009_broken.txt").write_text("no date here\n")
    monkeypatch.setenv("NEWSLETTER_SOURCES__ARTICLES_DIR", str(folder))

    code, listed, _ = run("sources", "list")
    assert code == 0
    assert listed.splitlines() == [
        f"2026-11-24  The market opens  ({folder / '002_market.md'})",
        f"2026-11-24  The ferry runs again  ({folder / '001_sent.txt'})",
        f"skipped: {folder / '009_broken.txt'}: line 1: expected 'date YYYY-MM-DD', "
        "got 'no date here'",
        "2 articles found, 1 file or entry skipped",
    ]

    code, explained, _ = run("sources", "list", "--explain")
    assert code == 0
    assert explained.splitlines() == [
        f"goes into the next digest: 2026-11-24 \u201cThe market opens\u201d "
        f"({folder / '002_market.md'})",
        f"goes into the next digest: 2026-11-24 \u201cThe ferry runs again\u201d "
        f"({folder / '001_sent.txt'})",
        f"skipped: {folder / '009_broken.txt'}: line 1: expected 'date YYYY-MM-DD', "
        "got 'no date here'",
        "goes into the next digest: 2; skipped: 1",
    ]


def test_every_sources_command_has_help(run: Run) -> None:
    for command in ("check", "list"):
        code, out, _ = run("sources", command, "--help")
        assert code == 0 and "Usage:" in out
    assert "--explain" in run("sources", "list", "--help")[1]


def test_articles_left_out_for_size_are_explained_and_go_out_next_time(
    make_context, smtp_server: SmtpTestServer, tmp_path: Path, clock
) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    paragraph = "The council met for hours and discussed every part of the plan in detail. " * 40
    for n in range(80):
        lead = f"Story number {n} was reported on the {10 + n % 16}th of the month by the desk."
        body = f"date 2026-11-{10 + n % 16}\n\n{lead}\n\n" + f"{paragraph}\n\n" * 3
        (folder / f"{n:03d}_story{n}.txt").write_text(body)
    ctx = make_context(
        smtp={"port": smtp_server.port},
        sources={"articles_dir": str(folder)},
        digest={"max_html_bytes": 25_000, "max_articles": 100, "max_age_days": 60},
    )
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    fates = explain_next_digest(ctx)
    carried = {f.article.key for f in fates if f.article and f.fate is Fate.CARRIED_OVER}
    going = {f.article.key for f in fates if f.article and f.fate is Fate.NEXT}
    assert carried and going and not carried & going
    assert {f.reason for f in fates if f.fate is Fate.CARRIED_OVER} == {
        "carried to the next digest: size"
    }

    first = app.send_now(ctx)
    assert first.articles == len(going)
    after = explain_next_digest(ctx)
    assert {f.article.key for f in after if f.article and f.fate is Fate.SENT} == going
    assert carried <= {
        f.article.key for f in after if f.article and f.fate in (Fate.NEXT, Fate.CARRIED_OVER)
    }
    sent = first.articles
    for _ in range(20):  # bounded: each digest carries at least one article
        summary = app.send_now(ctx)
        if summary.digest_id is None:
            break
        sent += summary.articles
    assert sent == 80  # every article went out, once
    assert {f.fate for f in explain_next_digest(ctx) if f.article} == {Fate.SENT}
