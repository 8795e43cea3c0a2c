"""RSS/Atom feeds: parsing fixture files, sanitizing entry HTML, and fetching over local HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest

from newsletter import __version__
from newsletter.config import FeedSettings, SourcesSettings
from newsletter.errors import SourceError
from newsletter.models import Article
from newsletter.sources.base import SourceResult
from newsletter.sources.feeds import FeedResult, FeedState, fetch_feed, fetch_feeds, parse_feed
from newsletter.sources.sanitize import sanitize_html, text_to_html
from newsletter.text import html_to_line
from tests.feed_server import (
    Endless,
    FeedServer,
    conditional,
    gzip_bomb,
    never_answer,
    redirect,
    serve_bytes,
    serve_file,
    status,
)

FEEDS = Path(__file__).parent / "feeds"
NOW = datetime(2024, 3, 10, 6, 0, tzinfo=UTC)
IMG_STYLE = 'style="max-width:100%;height:auto"'
REL = 'rel="noopener noreferrer"'


def sources(**overrides: Any) -> SourcesSettings:
    """Feed settings for tests: a generous timeout on localhost unless a test says otherwise."""
    values: dict[str, Any] = {"fetch_timeout": 5.0}
    values.update(overrides)
    return SourcesSettings(**values)


def parse_file(
    filename: str, *, url: str, name: str | None = None, content_type: str | None = None
) -> tuple[list[Article], list[str]]:
    """The articles of a fixture feed and its problems, as one-line messages."""
    feed = FeedSettings(url=url, name=name)
    data = (FEEDS / filename).read_bytes()
    result = parse_feed(data, feed=feed, base_url=url, now=NOW, content_type=content_type)
    return result.articles, [str(problem) for problem in result.problems]


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def fetch(
    server: FeedServer,
    client: httpx.Client,
    path: str,
    previous: FeedState | None = None,
    **overrides: Any,
) -> FeedResult:
    feed = FeedSettings(url=server.url(path))
    settings = sources(feeds=(feed,), **overrides)
    return fetch_feed(feed, client=client, previous=previous, now=NOW, settings=settings)


# -- parsing -------------------------------------------------------------------------------


def test_rss2_entries_newest_first_with_keys_dates_and_clean_html() -> None:
    url = "https://news.example.org/feed.xml"
    articles, warnings = parse_file("rss2.xml", url=url)

    untitled_text = (
        "A note without a title, a link or a date: the lighthouse is open on Sundays again."
    )
    untitled_hash = hashlib.sha256(f"\n{untitled_text}".encode()).hexdigest()[:32]
    # As many whole sentences as fit in 300 characters: the second one does not.
    budget_summary = (
        "The town council approved the budget for 2024 on Thursday evening after a debate that "
        "lasted more than four hours."
    )
    # Two entries with one guid and different content: the second is reported and skipped.
    assert warnings == [
        f"{url}: entry 4 skipped: it has the id of entry 1 (id:{url}#harbour-2024-0042) but "
        "other content; the feed should give each entry its own id"
    ]
    assert articles == [
        Article(
            key=f"hash:{untitled_hash}",  # no guid, no link
            # No title: the headline is derived from the text, which it says all of, so
            # neither a summary nor a body repeat it.
            title=untitled_text.removesuffix("."),
            published=NOW,  # undated: first seen now
            summary="",
            body_html=None,
            url=None,
            source="Harbour News",
            origin=url,
        ),
        Article(
            # A guid that is not a URI is unique within its feed only.
            key=f"id:{url}#harbour-2024-0042",
            title="Ferries back & running",
            published=datetime(2024, 3, 1, 8, 30, tzinfo=UTC),  # 09:30 +0100
            summary="Ferries run again after the storm. Tickets are half price this week.",
            body_html=(
                "<p>Ferries run again after the <strong>storm</strong>.</p>"
                '<p><img alt="The ferry" src="https://news.example.org/img/ferry.jpg" '
                f"{IMG_STYLE}></p>"
                f'<p><a href="https://news.example.org/tickets.html" {REL}>Tickets</a>'
                " are half price this week.</p>"
            ),
            url="https://news.example.org/2024/03/ferries",
            source="Harbour News",
            origin=url,
        ),
        Article(
            key="url:https://news.example.org/2024/02/budget",  # relative <link> resolved
            title="Council approves the 2024 budget",
            published=datetime(2024, 2, 29, 18, 0, tzinfo=UTC),
            summary=budget_summary,
            body_html=(
                "<p>The town council approved the budget for 2024 on Thursday evening after a "
                "debate that lasted more than four hours. The largest items are the renovation "
                "of the old harbour wall, a new roof for the primary school, and the extension "
                "of the cycle path along the coast road towards the lighthouse, which residents "
                "had asked for since 2019.</p><p>The opposition voted against it.</p>"
            ),
            url="https://news.example.org/2024/02/budget",
            source="Harbour News",
            origin=url,
        ),
    ]
    assert len(budget_summary) <= 300


def test_atom_entries_html_xhtml_and_plain_text_content() -> None:
    url = "https://blog.example.com/atom.xml"
    articles, warnings = parse_file("atom.xml", url=url, name="Garden")

    assert warnings == []
    assert articles == [
        Article(
            key="id:tag:blog.example.com,2024:tomatoes",
            title="Planting tomatoes early",
            published=datetime(2024, 3, 2, 13, 15, tzinfo=UTC),  # published wins over updated
            summary="Why March is not too early.",
            body_html=(
                "<h2>Tomatoes</h2><p>Sow them indoors. See "
                f'<a href="https://blog.example.com/seeds" {REL}>seeds</a>.</p>'
            ),
            url="https://blog.example.com/posts/tomatoes",  # against xml:base
            source="Garden",
            origin=url,
        ),
        Article(
            key="id:tag:blog.example.com,2024:roses",
            title="Pruning roses",
            published=datetime(2024, 2, 20, 7, 0, tzinfo=UTC),  # only <updated>
            # no <summary>: the leading sentences of the content
            summary="Prune roses when the forsythia blooms. Cut above an outward-facing bud! "
            "Then feed them.",
            body_html="<p>Prune roses when the forsythia blooms. Cut above an outward-facing "
            "bud!</p><p>Then feed them.</p>",
            url="https://blog.example.com/posts/roses",
            source="Garden",
            origin=url,
        ),
        Article(
            key="id:tag:blog.example.com,2024:frost",
            title="Frost dates & you",
            published=datetime(2024, 2, 10, 7, 0, tzinfo=UTC),
            summary="Last frost is around May 10. Check your local almanac. "
            "Protect seedlings with <fleece> & cloches.",
            # type="text": escaped, one <p> per paragraph
            body_html="<p>Last frost is around May 10. Check your local almanac.</p>"
            "<p>Protect seedlings with &lt;fleece&gt; &amp; cloches.</p>",
            url="https://blog.example.com/posts/frost",
            source="Garden",
            origin=url,
        ),
    ]


def test_rss1_rdf_uses_dc_date_and_rdf_about_as_id() -> None:
    url = "https://science.example.net/rss"
    articles, warnings = parse_file("rss1.rdf", url=url)

    assert warnings == []
    assert [(a.key, a.title, a.published, a.url, a.summary) for a in articles] == [
        (
            "id:https://science.example.net/comet",
            "Comet visible tonight",
            datetime(2024, 3, 3, 19, 0, tzinfo=UTC),
            "https://science.example.net/comet",
            "Look north-west after sunset.",
        ),
        (
            "id:https://science.example.net/moss",
            "Moss grows faster than thought",
            datetime(2024, 3, 1, 6, 0, tzinfo=UTC),
            "https://science.example.net/moss",
            "A new study measured it.",
        ),
    ]
    assert {a.source for a in articles} == {"Science Desk"}


def test_rss091_entry_without_guid_or_date() -> None:
    url = "http://old.example.com/rss"
    articles, warnings = parse_file("rss091.xml", url=url)

    assert warnings == []
    assert articles == [
        Article(
            key="url:http://old.example.com/still-here.html",
            title="Still here",
            published=NOW,
            summary="Twenty years of the same feed.",
            body_html="<p>Twenty years of the same feed.</p>",
            url="http://old.example.com/still-here.html",
            source="Old School",
            origin=url,
        )
    ]


def test_wrong_encoding_is_read_anyway_with_a_warning() -> None:
    url = "https://cafe.example.de/feed"
    articles, warnings = parse_file(
        "latin1_declared_utf8.xml", url=url, content_type="application/rss+xml; charset=utf-8"
    )

    assert [(a.title, a.summary, a.source) for a in articles] == [
        ("Neue Kuchen im März", "Käsekuchen, Apfelstrudel und Crème brûlée.", "Café Müller")
    ]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"{url}: character encoding problem (document declared as utf-8, but parsed as "
    )
    assert warnings[0].endswith("); 1 entry read")


def test_truncated_feed_yields_complete_entries_and_a_warning() -> None:
    url = "https://cut.example.org/rss"
    articles, warnings = parse_file("truncated.xml", url=url, name="Cut")

    assert [(a.key, a.title, a.published) for a in articles] == [
        ("url:https://cut.example.org/first", "First story", datetime(2024, 3, 4, 10, tzinfo=UTC)),
        (
            "url:https://cut.example.org/second",
            "Second story",
            datetime(2024, 3, 3, 10, tzinfo=UTC),
        ),
    ]
    assert warnings == [f"{url} (Cut): malformed feed (line 20: no element found); 2 entries read"]


def test_hostile_entry_html_is_reduced_to_an_email_safe_subset() -> None:
    url = "https://hostile.example.com/rss"
    articles, warnings = parse_file("hostile.xml", url=url)

    assert warnings == []
    [article] = articles
    assert article.title == "Totally normal post"
    assert article.url is None  # javascript: link
    assert article.key == f"id:{url}#hostile-1"
    assert article.body_html == (
        "<h2>Big news</h2>\n\n\n"
        "<p>Read this,\n"
        f'<a href="https://hostile.example.com/about" {REL}>about us</a>,\n'
        "that and\n"
        f'<a href="mailto:editor@hostile.example.com" {REL}>mail</a>.</p>\n'
        '<img alt="Chart" src="https://hostile.example.com/images/chart.png" width="600" '
        f"{IMG_STYLE}>\n\n\n\n\n\n"
        "<h4>Small print</h4>\n"
        "<table><tbody><tr><th>Day</th><td>Monday</td></tr></tbody></table>"
    )


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("html page", (FEEDS / "not_a_feed.html").read_bytes(), "got an HTML page"),
        ("broken xml", b"<?xml version='1.0'?><rss><channel><<<", "malformed feed (line 1: "),
        ("other xml", b"<?xml version='1.0'?><svg><g/></svg>", "no RSS or Atom elements found"),
    ],
)
def test_unreadable_documents_raise_source_error(name: str, data: bytes, problem: str) -> None:
    feed = FeedSettings(url="https://example.org/feed", name="Example")

    with pytest.raises(SourceError) as caught:
        parse_feed(data, feed=feed, base_url=feed.url, now=NOW)

    message = str(caught.value)
    assert message.startswith(
        "https://example.org/feed (Example): not a readable RSS or Atom feed ("
    )
    assert problem in message
    assert message.endswith("; check that the url points at the feed")


def test_empty_body_raises_source_error() -> None:
    feed = FeedSettings(url="https://example.org/feed")
    with pytest.raises(SourceError, match=r"^https://example.org/feed: empty response; "):
        parse_feed(b"  \n", feed=feed, base_url=feed.url, now=NOW)


def test_an_empty_but_valid_feed_is_not_an_error() -> None:
    data = b"<rss version='2.0'><channel><title>Quiet</title></channel></rss>"
    feed = FeedSettings(url="https://example.org/feed")
    assert parse_feed(data, feed=feed, base_url=feed.url, now=NOW) == SourceResult()


def test_bytes_that_look_like_a_path_are_never_opened_as_a_file() -> None:
    feed = FeedSettings(url="https://example.org/feed")
    with pytest.raises(SourceError, match="not a readable RSS or Atom feed"):
        parse_feed(str(FEEDS / "rss2.xml").encode(), feed=feed, base_url=feed.url, now=NOW)


def test_naive_now_is_refused() -> None:
    feed = FeedSettings(url="https://example.org/feed")
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_feed(b"<rss/>", feed=feed, base_url=feed.url, now=datetime(2024, 1, 1))


# -- sanitizer -----------------------------------------------------------------------------

BASE = "https://example.org/dir/page.html"


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ('<p onclick="steal()" class="x" style="color:red">Hi</p>', "<p>Hi</p>"),
        ('<a href="javascript:alert(1)">x</a>', "x"),
        ('<a href=" JaVaScRiPt:alert(1)">x</a>', "x"),
        ('<a href="jav&#x09;ascript:alert(1)">x</a>', "x"),
        ('<a href="data:text/html,hi">x</a>', "x"),
        ('<a href="#top">x</a>', "x"),
        (
            '<a href="/a?b=1&c=2" target="_blank" title="T">x</a>',
            f'<a href="https://example.org/a?b=1&amp;c=2" title="T" {REL}>x</a>',
        ),
        ('<a href="next.html">x</a>', f'<a href="https://example.org/dir/next.html" {REL}>x</a>'),
        ('<a href="//cdn.example/x">x</a>', f'<a href="https://cdn.example/x" {REL}>x</a>'),
        (
            '<img src="x.png" onerror="steal()">',
            f'<img src="https://example.org/dir/x.png" {IMG_STYLE}>',
        ),
        (
            '<img src="a.png" width="1600" height="900" style="float:left">',
            f'<img src="https://example.org/dir/a.png" width="600" {IMG_STYLE}>',
        ),
        (
            '<img src="a.png" width="320px" height="200">',
            f'<img src="https://example.org/dir/a.png" width="320" {IMG_STYLE}>',
        ),
        (
            '<img src="a.png" width="100%">',
            f'<img src="https://example.org/dir/a.png" {IMG_STYLE}>',
        ),
        ('<p><img src="https://t.example/p.gif" width="1" height="1"></p>', ""),
        ('<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">', ""),
        ('<IMG SRC="javascript:alert(1)">', ""),
        (
            '<img src="https://example.org/a.png" alt=\'"><script>alert(1)</script>\'>',
            '<img src="https://example.org/a.png" '
            f'alt="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" {IMG_STYLE}>',
        ),
        ("<h1>T</h1><h3>U</h3><h5>S</h5><h6>X</h6>", "<h2>T</h2><h3>U</h3><h4>S</h4><h4>X</h4>"),
        ("<script>alert(1)</script><style>p{}</style>ok", "ok"),
        ('<iframe src="https://evil.example/">fallback</iframe>ok', "ok"),
        ('<form action="/x"><input name="p"><button>Go</button></form>ok', "ok"),
        ("<svg onload=alert(1)><circle/></svg><math><mi>x</mi></math>ok", "ok"),
        ('<div><span style="color:red">Hi</span></div>', "Hi"),
        ("<p>a</p><!-- comment --><p> </p>", "<p>a</p>"),
        (
            "<table><tr><td colspan=2 bgcolor=red>x</td></tr></table>",
            '<table><tbody><tr><td colspan="2">x</td></tr></tbody></table>',
        ),
        ("<pre><code>a &lt; b\n  c</code></pre>", "<pre><code>a &lt; b\n  c</code></pre>"),
        ('<a href="mailto:ed@example.org">m</a>', f'<a href="mailto:ed@example.org" {REL}>m</a>'),
        (
            "<figure><img src='f.jpg'><figcaption>Cap</figcaption></figure>",
            f'<figure><img src="https://example.org/dir/f.jpg" {IMG_STYLE}>'
            "<figcaption>Cap</figcaption></figure>",
        ),
    ],
)
def test_sanitize_html(dirty: str, clean: str) -> None:
    assert sanitize_html(dirty, base_url=BASE) == clean


def test_sanitize_html_drops_relative_urls_without_a_usable_base() -> None:
    assert sanitize_html('<a href="x.html">x</a><img src="y.png">', base_url="") == "x"


def test_html_to_line() -> None:
    html = "<p>One</p><p>Two &amp;three</p>H<sub>2</sub>O<br>next <script>x()</script>&lt;b&gt;"
    assert html_to_line(html) == "One Two &three H2O next <b>"


def test_text_to_html() -> None:
    assert (
        text_to_html("a <b>\nwrapped\n\n  \n c & d\n")
        == "<p>a &lt;b&gt; wrapped</p><p>c &amp; d</p>"
    )


# -- fetching over HTTP --------------------------------------------------------------------


def test_fetch_reads_the_feed_and_keeps_validators(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/rss"] = serve_file(
        "rss2.xml", ETag='"v1"', Last_Modified="Fri, 01 Mar 2024 09:00:00 GMT"
    )

    result = fetch(server, client, "/rss")

    assert result.error is None
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        "entry 4 skipped: it has the id of entry 1 "
        f"(id:{server.url('/rss')}#harbour-2024-0042) but other content; "
        "the feed should give each entry its own id"
    ]
    assert result.not_modified is False
    assert [a.title for a in result.articles] == [
        "A note without a title, a link or a date: the lighthouse is open on Sundays again",
        "Ferries back & running",
        "Council approves the 2024 budget",
    ]
    # relative links resolve against the URL the feed was fetched from
    assert result.articles[2].url == server.url("/2024/02/budget")
    assert result.state == FeedState(etag='"v1"', last_modified="Fri, 01 Mar 2024 09:00:00 GMT")
    [exchange] = server.seen("/rss")
    assert exchange.headers["user-agent"] == f"newsletter/{__version__} (+feed digest)"
    assert "if-none-match" not in exchange.headers
    assert "if-modified-since" not in exchange.headers


def test_conditional_get_answered_304_costs_nothing(
    server: FeedServer, client: httpx.Client
) -> None:
    validators = {"etag": '"abc"', "last_modified": "Sat, 02 Mar 2024 10:00:00 GMT"}
    server.routes["/rss"] = conditional("rss2.xml", **validators)

    first = fetch(server, client, "/rss")
    second = fetch(server, client, "/rss", previous=first.state)

    assert first.state == FeedState(**validators)
    assert len(first.articles) == 3
    assert second == FeedResult(
        feed=second.feed, articles=[], state=first.state, not_modified=True, warnings=[], error=None
    )
    first_exchange, second_exchange = server.seen("/rss")
    assert first_exchange.status == 200
    assert second_exchange.headers["if-none-match"] == '"abc"'
    assert second_exchange.headers["if-modified-since"] == "Sat, 02 Mar 2024 10:00:00 GMT"
    assert second_exchange.status == 304


def test_custom_user_agent(server: FeedServer, client: httpx.Client) -> None:
    fetch(server, client, "/feeds/rss1.rdf", user_agent="HarbourBot/2.0 (+mailto:ops@example.org)")
    assert server.seen("/feeds/rss1.rdf")[0].headers["user-agent"] == (
        "HarbourBot/2.0 (+mailto:ops@example.org)"
    )


def test_redirects_within_the_limit_are_followed(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/hop3"] = redirect("/hop2")
    server.routes["/hop2"] = redirect(server.url("/hop1"), code=307)
    server.routes["/hop1"] = redirect("/moved/feed.xml")
    server.routes["/moved/feed.xml"] = serve_file("rss2.xml")

    result = fetch(server, client, "/hop3", max_redirects=3)

    assert result.error is None
    assert len(result.articles) == 3
    assert result.articles[2].url == server.url("/2024/02/budget")
    assert [e.status for e in server.exchanges] == [302, 307, 302, 200]


def test_permanent_redirect_warns_to_update_the_config(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/old"] = redirect("/feeds/atom.xml", code=301)

    result = fetch(server, client, "/old")

    assert result.error is None
    assert result.warnings == [
        f"{server.url('/old')}: moved permanently to {server.url('/feeds/atom.xml')}; "
        "update the feed url in the config"
    ]


def test_too_many_redirects_is_an_error(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/hop3"] = redirect("/hop2")
    server.routes["/hop2"] = redirect("/hop1")
    server.routes["/hop1"] = redirect("/feeds/rss2.xml")
    previous = FeedState(etag='"old"')

    result = fetch(server, client, "/hop3", previous=previous, max_redirects=2)

    assert result.articles == []
    assert result.state == previous
    assert result.error == (
        f"{server.url('/hop3')}: more than 2 redirects (last to {server.url('/feeds/rss2.xml')}); "
        "check the url or raise sources.max_redirects"
    )
    assert server.seen("/feeds/rss2.xml") == []


def test_redirect_to_another_scheme_is_an_error(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/ftp"] = redirect("ftp://files.example.org/feed.xml")
    result = fetch(server, client, "/ftp")
    assert result.error == (
        f"{server.url('/ftp')}: redirected to ftp://files.example.org/feed.xml, which is not "
        "an http(s) url; check the feed url"
    )


def test_timeout_is_an_error(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/slow"] = never_answer

    result = fetch(server, client, "/slow", fetch_timeout=0.3)

    assert result.error == (
        f"{server.url('/slow')}: no answer within 0.3 s; check that the site is up, "
        "or raise sources.fetch_timeout"
    )
    assert result.articles == []


@pytest.mark.parametrize("code", [404, 500])
def test_http_error_status(server: FeedServer, client: httpx.Client, code: int) -> None:
    server.routes["/broken"] = status(code, b"<rss/>")
    result = fetch(server, client, "/broken")
    reason = {404: "Not Found", 500: "Internal Server Error"}[code]
    assert result.error == (
        f"{server.url('/broken')}: HTTP {code} {reason}; check the url, or whether the site is down"
    )


def test_http_error_after_a_redirect_names_the_final_url(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/old"] = redirect("/gone")
    result = fetch(server, client, "/old")
    assert result.error == (
        f"{server.url('/old')}: HTTP 404 Not Found from {server.url('/gone')}; "
        "check the url, or whether the site is down"
    )


def test_declared_length_over_the_limit_is_refused_unread(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/big"] = serve_bytes(b"<rss/>", Content_Length="10000000")

    result = fetch(server, client, "/big", max_feed_bytes=4096)

    assert result.error == (
        f"{server.url('/big')}: response is larger than the sources.max_feed_bytes limit of "
        "4,096 bytes; check the url or raise the limit (Content-Length: 10,000,000)"
    )


def test_endless_body_is_cut_off_at_the_limit(server: FeedServer, client: httpx.Client) -> None:
    endless = Endless(total=64_000_000)
    server.routes["/endless"] = endless

    result = fetch(server, client, "/endless", max_feed_bytes=100_000)

    assert result.error == (
        f"{server.url('/endless')}: response is larger than the sources.max_feed_bytes limit of "
        "100,000 bytes; check the url or raise the limit"
    )
    assert endless.done.wait(5)
    assert endless.written < endless.total  # the client hung up instead of reading it all


def test_small_gzip_body_that_inflates_past_the_limit_is_refused(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/bomb"] = gzip_bomb(decoded_size=2_000_000)

    result = fetch(server, client, "/bomb", max_feed_bytes=100_000)

    assert result.error is not None
    assert "larger than the sources.max_feed_bytes limit of 100,000 bytes" in result.error


def test_broken_compressed_body_is_an_error(server: FeedServer, client: httpx.Client) -> None:
    server.routes["/gz"] = serve_bytes(b"<rss>not gzip</rss>", Content_Encoding="gzip")
    result = fetch(server, client, "/gz")
    assert result.error is not None
    assert result.error.startswith(f"{server.url('/gz')}: cannot decode the response (")
    assert result.error.endswith("); the server sent a broken body")


def test_connection_refused_is_an_error(client: httpx.Client) -> None:
    with FeedServer() as gone:
        url = gone.url("/feed")  # nothing listens there once the server is stopped
    feed = FeedSettings(url=url, name="Gone")

    result = fetch_feed(feed, client=client, previous=None, now=NOW, settings=sources())

    assert result.error is not None
    assert result.error.startswith(f"{url} (Gone): download failed (")
    assert result.error.endswith("); check the url and your network")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://[::1/feed", "https:feed.xml"])
def test_non_http_url_is_an_error(client: httpx.Client, url: str) -> None:
    feed = FeedSettings(url=url)
    result = fetch_feed(feed, client=client, previous=None, now=NOW, settings=sources())
    assert result.error == f"{url}: not an http(s) url; check the feed url in the config"


def test_invalid_url_is_an_error(client: httpx.Client) -> None:
    feed = FeedSettings(url="http://127.0.0.1:9/feed\n")
    result = fetch_feed(feed, client=client, previous=None, now=NOW, settings=sources())
    assert result.error is not None
    assert result.error.startswith(f"{feed.url}: not a valid url (Invalid non-printable ASCII")
    assert result.error.endswith("); check the feed url in the config")


def test_unexpected_parser_failure_is_reported_not_raised(
    server: FeedServer, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(feedparser, "parse", explode)

    result = fetch(server, client, "/feeds/rss2.xml", previous=FeedState(etag='"x"'))

    assert result.state == FeedState(etag='"x"')
    assert result.error == (
        f"{server.url('/feeds/rss2.xml')}: cannot parse the feed "
        "(RecursionError('maximum recursion depth exceeded')); please report this bug"
    )


def test_unreadable_feed_keeps_the_previous_validators(
    server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/page"] = serve_file("not_a_feed.html", ETag='"new"')
    previous = FeedState(etag='"old"', last_modified=None)

    result = fetch(server, client, "/page", previous=previous)

    assert result.state == previous  # so the next run asks again instead of getting a 304
    assert result.error == (
        f"{server.url('/page')}: not a readable RSS or Atom feed (got an HTML page); "
        "check that the url points at the feed"
    )


def test_fetch_feeds_one_bad_feed_does_not_stop_the_others(server: FeedServer) -> None:
    server.routes["/slow"] = never_answer
    server.routes["/rss2"] = conditional("rss2.xml", etag='"r2"', last_modified="x")
    feeds = (
        FeedSettings(url=server.url("/feeds/atom.xml"), name="Garden"),
        FeedSettings(url=server.url("/missing.xml")),
        FeedSettings(url=server.url("/slow")),
        FeedSettings(url=server.url("/feeds/truncated.xml")),
        FeedSettings(url=server.url("/feeds/not_a_feed.html")),
        FeedSettings(url=server.url("/rss2")),
    )
    previous = {server.url("/rss2"): FeedState(etag='"r2"')}

    results = fetch_feeds(
        sources(feeds=feeds, fetch_timeout=0.3), previous=previous, now=NOW
    )  # no client given: fetch_feeds makes and closes its own

    assert [r.feed for r in results] == list(feeds)
    assert [(len(r.articles), r.not_modified, r.error is None) for r in results] == [
        (3, False, True),
        (0, False, False),
        (0, False, False),
        (2, False, True),
        (0, False, False),
        (0, True, True),
    ]
    assert results[1].error is not None and "HTTP 404 Not Found" in results[1].error
    assert results[2].error is not None and "no answer within 0.3 s" in results[2].error
    assert results[3].warnings == [
        f"{feeds[3].url}: malformed feed (line 20: no element found); 2 entries read"
    ]
    assert results[4].error is not None and "got an HTML page" in results[4].error
    assert [a.source for a in results[0].articles] == ["Garden"] * 3


def test_an_entry_dated_in_the_future_is_dated_now() -> None:
    data = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Ahead</title>'
        b"<item><title>From the future</title><link>https://ahead.example.org/1</link>"
        b"<pubDate>Mon, 01 Jan 2035 08:00:00 GMT</pubDate><description>Soon.</description></item>"
        b"<item><title>From the past</title><link>https://ahead.example.org/0</link>"
        b"<pubDate>Sat, 02 Mar 2024 08:00:00 GMT</pubDate><description>Then.</description></item>"
        b"</channel></rss>"
    )
    feed = FeedSettings(url="https://ahead.example.org/feed.xml")

    articles = parse_feed(data, feed=feed, base_url=feed.url, now=NOW).articles

    assert [(a.title, a.published) for a in articles] == [
        ("From the future", NOW),
        ("From the past", datetime(2024, 3, 2, 8, 0, tzinfo=UTC)),
    ]
