"""Selection: newest first, within the age window, one per URL, capped per source and in total."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.models import Article
from newsletter.selection import Verdict, judge_candidates, normalized_url, select_new_articles

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


def article(key: str, days_ago: float, url: str | None = None, origin: str = "folder") -> Article:
    published = NOW - timedelta(days=days_ago)
    return Article(key=key, title=key, published=published, summary="", url=url, origin=origin)


def test_each_rule_in_order() -> None:
    candidates = [
        article("old", 9),
        article("newest", 0.1, "https://x.example/a"),
        article("same-url", 1, "HTTPS://X.EXAMPLE/a/"),
        article("carried-url", 1.5, "https://x.example/sent"),
        article("feed-1", 2, origin="https://feed.example/rss"),
        article("feed-2", 2.5, origin="https://feed.example/rss"),
        article("third", 3),
        article("fourth", 4),
    ]
    judged = judge_candidates(
        candidates,
        now=NOW,
        max_age_days=7,
        max_articles=3,
        per_origin_limit={"https://feed.example/rss": 1},
        carried_urls={"https://x.example/sent": 4},
    )

    verdicts = {j.article.key: j.verdict for j in judged}
    assert verdicts == {
        "newest": Verdict.CHOSEN,
        "same-url": Verdict.SAME_URL,
        "carried-url": Verdict.SAME_URL,
        "feed-1": Verdict.CHOSEN,
        "feed-2": Verdict.OVER_SOURCE_CAP,
        "third": Verdict.CHOSEN,
        "fourth": Verdict.OVER_CAP,
        "old": Verdict.TOO_OLD,
    }
    taken_by = {j.article.key: j.same_url_as for j in judged if j.verdict is Verdict.SAME_URL}
    assert taken_by["carried-url"] == 4
    assert isinstance(taken_by["same-url"], Article) and taken_by["same-url"].key == "newest"
    chosen = select_new_articles(
        candidates,
        now=NOW,
        max_age_days=7,
        max_articles=3,
        per_origin_limit={"https://feed.example/rss": 1},
        carried_urls=["https://x.example/sent"],
    )
    assert [a.key for a in chosen] == ["newest", "feed-1", "third"]


URLS = ["https://a.example/1", "https://a.example/1/", "https://b.example/2"]
candidate_lists = st.lists(
    st.builds(
        article,
        key=st.uuids().map(str),
        days_ago=st.floats(min_value=0, max_value=20),
        url=st.none() | st.sampled_from(URLS),
        origin=st.sampled_from(["folder", "https://feed.example/rss"]),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(candidate_lists, st.integers(1, 10), st.integers(0, 5))
def test_chosen_articles_keep_every_rule(
    found: list[Article], max_articles: int, feed_cap: int
) -> None:
    caps = {"https://feed.example/rss": feed_cap}
    chosen = select_new_articles(
        found, now=NOW, max_age_days=7, max_articles=max_articles, per_origin_limit=caps
    )
    judged = judge_candidates(
        found, now=NOW, max_age_days=7, max_articles=max_articles, per_origin_limit=caps
    )

    assert chosen == [j.article for j in judged if j.verdict is Verdict.CHOSEN]
    assert len(judged) == len(found)  # every candidate gets a verdict
    assert len(chosen) <= max_articles
    assert all(a.published >= NOW - timedelta(days=7) for a in chosen)
    urls = [normalized_url(a.url) for a in chosen if a.url]
    assert len(urls) == len(set(urls))
    assert Counter(a.origin for a in chosen)["https://feed.example/rss"] <= feed_cap
    assert chosen == sorted(chosen, key=lambda a: (a.published, a.key), reverse=True)
