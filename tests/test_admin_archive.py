"""The public archive: "View in browser" links in the sent mail, pages without anybody's data,
an Atom feed that feedparser reads, the private mode, and odd addresses answered with 4xx.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from email.message import EmailMessage
from urllib.parse import quote

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import app
from newsletter.app import Context
from newsletter.personalization import worst_case_size
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from tests import wire
from tests.admin_login import cheap_passwords, operator_client
from tests.smtp_servers import SmtpTestServer

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.usefixtures("cheap_passwords")
__all__ = ["cheap_passwords"]

BASE = "https://news.example.org"
VIEW_LINK = re.compile(re.escape(BASE) + r"(/archive/d/[A-Za-z0-9_-]{16})")
TOKEN = re.compile(r"NL[0-9a-f]{12}Q")


def send_to_ada(make_context: Callable[..., Context], port: int, clock, **web: object):
    ctx = make_context(smtp={"port": port}, web=web)
    add_subscriber(ctx.store, "ada.lovelace@example.org", "Ada Lovelace", now=clock())
    summary = app.send_now(ctx)
    assert summary.digest_id is not None
    return ctx, summary


def parts(message: EmailMessage) -> tuple[str, str]:
    return wire.body(message, "html"), wire.body(message, "plain")


def test_each_digest_links_to_its_public_page_which_shows_nobodys_data(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx, summary = send_to_ada(make_context, smtp_server.port, clock)
    [message] = smtp_server.messages()
    html_part, text_part = parts(message)
    in_html = VIEW_LINK.search(html_part)
    in_text = VIEW_LINK.search(text_part)
    assert in_html is not None and in_text is not None
    assert in_html.group(1) == in_text.group(1)  # the same link in both parts
    assert "View in browser" in html_part and "View in browser:" in text_part
    unsubscribe = re.search(r"/unsubscribe/([A-Za-z0-9_.-]+)", text_part)
    assert unsubscribe is not None
    visitor = TestClient(create_app(ctx), base_url="https://testserver")  # nobody logged in

    hop = visitor.get(in_html.group(1), follow_redirects=False)
    page = visitor.get(hop.headers["location"])
    alone = visitor.get(f"/archive/{summary.digest_id}/email.html")

    assert hop.status_code == 302 and hop.headers["location"] == f"/archive/{summary.digest_id}"
    assert page.status_code == alone.status_code == 200
    for shown in (page.text, alone.text):
        assert "Ada" not in shown and "ada.lovelace" not in shown and "Lovelace" not in shown
        assert unsubscribe.group(1) not in shown and not TOKEN.search(shown)
        assert "Hello reader," in shown
    assert f'href="{BASE}/subscribe"' in alone.text  # the unsubscribe link: the sign-up page


def test_a_private_archive_is_for_operators_only_and_digests_carry_no_link(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx, summary = send_to_ada(make_context, smtp_server.port, clock, public_archive=False)
    [message] = smtp_server.messages()
    html_part, text_part = parts(message)
    visitor = TestClient(create_app(ctx), base_url="https://testserver")
    urls = ["/archive", f"/archive/{summary.digest_id}", "/archive/feed.xml"]

    refused = [visitor.get(url, follow_redirects=False) for url in urls]
    operator = operator_client(ctx)

    assert "/archive/d/" not in html_part and "View in browser" not in text_part
    assert all(r.status_code == 303 and r.headers["location"].startswith("/login") for r in refused)
    assert all(operator.get(url).status_code == 200 for url in urls)


def test_the_atom_feed_lists_sent_digests_and_is_valid_atom(
    make_context, smtp_server: SmtpTestServer, clock
):
    ctx, first = send_to_ada(make_context, smtp_server.port, clock)
    clock.advance(days=1)
    empty = TestClient(create_app(make_context(smtp={"port": smtp_server.port})))
    assert feedparser.parse(empty.get("/archive/feed.xml").content).bozo == 0  # none sent yet

    answer = TestClient(create_app(ctx)).get("/archive/feed.xml")
    feed = feedparser.parse(answer.content)

    assert answer.headers["content-type"].startswith("application/atom+xml")
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "The Daily Digest"
    [entry] = feed.entries
    assert entry.title == first.subject
    assert entry.link == f"{BASE}/archive/{first.digest_id}"
    assert entry.id == f"{BASE}/archive/{first.digest_id}"
    assert "Brenmoor" in entry.content[0].value  # the digest's articles
    assert "ada.lovelace" not in answer.text and "Ada" not in answer.text


@pytest.mark.parametrize(
    "url",
    [
        "/archive/99999999999999999999999999999",
        "/archive/2147483648",
        "/archive/99999999999999999999999999999/email.html",
        "/archive/0",
        "/archive/d/AAAAAAAAAAAAAAAA",
        "/archive/d/not-a-key",
        "/archive/d/" + "x" * 5000,
    ],
)
def test_no_such_digest_is_404(make_context, url):
    answer = TestClient(create_app(make_context())).get(url, follow_redirects=False)
    assert answer.status_code == 404


@pytest.fixture
def visitor(make_context) -> TestClient:
    """Nobody logged in; server errors come back as 500 answers, not exceptions."""
    return TestClient(create_app(make_context()), raise_server_exceptions=False)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(segment=st.text(min_size=1, max_size=200).filter(lambda s: s not in (".", "..")))
def test_any_archive_address_is_answered_without_a_server_error(visitor, segment):
    quoted = quote(segment, safe="")
    for url in (f"/archive/{quoted}", f"/archive/d/{quoted}"):
        assert visitor.get(url, follow_redirects=False).status_code < 500


def test_the_link_counts_in_the_size_guarantee(make_context, tmp_path):
    long_base = "https://" + "n" * 180 + ".example.org/newsletter"
    ctx = make_context(web={"base_url": long_base}, digest={"max_html_bytes": 20_000})
    upcoming, _ = app.preview_digest(ctx)
    assert upcoming is not None
    html, text = upcoming.rendered.html, upcoming.rendered.text
    assert f"{long_base}/archive/d/" in html and f"{long_base}/archive/d/" in text
    limit = ctx.settings.digest.max_html_bytes
    assert worst_case_size(html, upcoming.tokens, base_url=long_base, escaped=True) <= limit
    assert worst_case_size(text, upcoming.tokens, base_url=long_base, escaped=False) <= limit
