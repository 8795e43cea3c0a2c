"""The admin pages over HTTP: dashboard, subscribers (search, filter, pages, add, unsubscribe,
export), one digest with its failed deliveries and the "retry failed" action.

Digests are sent through the real pipeline to a real SMTP server on 127.0.0.1.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter import app
from newsletter.app import Context, subscriber_list
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from newsletter.subscribers import add_subscriber
from tests.admin_login import cheap_passwords, form_token, operator_client
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.usefixtures("cheap_passwords")
__all__ = ["cheap_passwords"]

NO_SUCH_USER = "550 5.1.1 <{}>: no such user here"


@pytest.fixture
def ctx(make_context: Callable[..., Context], smtp_server: SmtpTestServer) -> Context:
    return make_context(smtp={"port": smtp_server.port, "max_attempts": 1})


@pytest.fixture
def client(ctx: Context):
    """Logged in as an operator (shared by the examples of a Hypothesis test)."""
    return operator_client(ctx)


def add_many(ctx: Context, count: int, clock) -> list[str]:
    emails = [f"reader{n:03d}@example.org" for n in range(count)]
    with ctx.store.atomic() as conn:
        subscriber_rows.insert_many(
            conn,
            [(email, f"Reader {n:03d}", {}) for n, email in enumerate(emails)],
            state=SubscriberState.ACTIVE,
            now=clock(),
        )
    return emails


def listed(page: str) -> list[str]:
    return re.findall(r'<tr data-email="([^"]+)">', page)


def state_of(ctx: Context, email: str) -> SubscriberState | None:
    with ctx.store.atomic() as conn:
        found = subscriber_rows.get_by_email(conn, email)
    return found.state if found else None


# --- dashboard ---------------------------------------------------------------------------


def test_the_dashboard_shows_recent_digests_deliveries_and_the_hard_bounce_rate(
    ctx, smtp_server: SmtpTestServer, clock
):
    for email in ("ada@example.org", "bob@example.org", "gone@example.org"):
        add_subscriber(ctx.store, email, "", now=clock())
    smtp_server.handler.rcpt_reply = lambda address, _: (
        NO_SUCH_USER.format(address) if address.startswith("gone@") else None
    )
    summary = app.send_now(ctx)
    assert summary.digest_id is not None and summary.subject is not None
    fire = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    client = operator_client(ctx, next_run=lambda now: fire)

    page = client.get("/admin").text

    row = re.search(rf'<tr data-digest="{summary.digest_id}">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num"[^>]*>([^<]*)<', row.group(1))
    # sent, failed, waiting, hard bounces, complaints
    assert cells[:5] == ["2", "1", "0", "1 (33.3%)", "0 (0.00%)"]
    assert html.escape(summary.subject) in row.group(1)
    assert 'id="next-run">Fri 27 Nov 2026, 07:00 UTC' in page
    assert re.search(r'data-state="bounced">1<', page)  # the bounced address is counted
    assert re.search(r'data-state="active">2<', page)


def test_the_dashboard_flags_feeds_without_a_recent_fetch(make_context):
    ctx = make_context(sources={"feeds": [{"url": "https://feeds.example.org/a", "name": "A"}]})
    page = operator_client(ctx).get("/admin").text
    assert 'data-stale="true"' in page and ">never" in page


# --- subscribers -------------------------------------------------------------------------


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_keyset_pages_walk_the_whole_list_once_each_way(ctx, clock):
    emails = add_many(ctx, 120, clock)
    client = operator_client(ctx)

    seen: list[str] = []
    url = "/admin/subscribers"
    pages = []
    while url:
        page = client.get(url).text
        pages.append(url)
        seen += listed(page)
        older = re.search(r'href="([^"]+)" id="older"', page)
        url = html.unescape(older.group(1)) if older else ""
        assert len(pages) < 10

    assert seen == list(reversed(emails))  # newest first, each once
    assert len(pages) == 3
    back: list[str] = []
    page = client.get(pages[-1]).text
    while True:
        newer = re.search(r'href="([^"]+)" id="newer"', page)
        if not newer:
            break
        page = client.get(html.unescape(newer.group(1))).text
        back = listed(page) + back
    assert back == seen[: len(back)] and len(back) == 100


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_search_by_address_or_name_and_filter_by_state(ctx, clock):
    add_subscriber(ctx.store, "ada.lovelace@example.org", "Ada Lovelace", now=clock())
    add_subscriber(ctx.store, "charles@example.org", "Charles Babbage", now=clock())
    add_subscriber(ctx.store, "percent%@example.org", "Under_Score", now=clock())
    subscriber_list.remove(ctx, "charles@example.org")
    client = operator_client(ctx)

    def search(**params: str) -> list[str]:
        return listed(client.get("/admin/subscribers", params=params).text)

    assert search(q="lovelace") == ["ada.lovelace@example.org"]
    assert search(q="BABBAGE") == ["charles@example.org"]  # names, any case
    assert search(q="%") == ["percent%@example.org"]  # wildcards match themselves
    assert search(q="_") == ["percent%@example.org"]
    assert search(state="unsubscribed") == ["charles@example.org"]
    assert search(q="example.org", state="active") == [
        "percent%@example.org",
        "ada.lovelace@example.org",
    ]
    assert search(state="no-such-state") == search()  # an unknown state is no filter


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=st.text(max_size=300),
    state=st.text(max_size=20),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
@example(query="", state="", before="\u00b9", after="\u00b9")  # digits to isdigit(), not to int()
def test_any_search_parameters_get_a_page(client, query, state, before, after):
    answer = client.get(
        "/admin/subscribers", params={"q": query, "state": state, "before": before, "after": after}
    )
    assert answer.status_code == 200


def test_add_and_unsubscribe_through_the_forms(ctx, clock):
    add_subscriber(ctx.store, "bob@example.org", "Bob", now=clock())
    client = operator_client(ctx)
    token = form_token(client.get("/admin/subscribers").text)

    added = client.post(
        "/admin/subscribers/add",
        data={"csrf_token": token, "email": "Carol@Example.org", "name": "Carol"},
    )
    removed = client.post(
        "/admin/subscribers/unsubscribe",
        data={"csrf_token": token, "email": "bob@example.org", "back": "/admin/subscribers"},
    )
    again = client.post(
        "/admin/subscribers/unsubscribe",
        data={"csrf_token": token, "email": "bob@example.org"},
    )
    invalid = client.post(
        "/admin/subscribers/add", data={"csrf_token": token, "email": "not an address"}
    )

    assert added.status_code == 200 and "Added carol@example.org as active." in added.text
    assert listed(added.text) == ["carol@example.org"]
    assert state_of(ctx, "carol@example.org") is SubscriberState.ACTIVE
    assert "Unsubscribed bob@example.org." in removed.text
    assert "bob@example.org was already unsubscribed." in again.text
    assert state_of(ctx, "bob@example.org") is SubscriberState.UNSUBSCRIBED
    assert invalid.status_code == 422 and 'id="form-error"' in invalid.text


def test_export_is_the_whole_list_as_csv(ctx, clock):
    emails = add_many(ctx, 30, clock)
    subscriber_list.remove(ctx, emails[0])
    client = operator_client(ctx)

    answer = client.get("/admin/subscribers.csv")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith('attachment; filename="subscribers-')
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"))))
    assert sorted(r["email"] for r in rows) == emails
    assert {r["email"]: r["state"] for r in rows}[emails[0]] == "unsubscribed"


# --- one digest --------------------------------------------------------------------------


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_the_digest_page_shows_articles_counts_and_failures_and_retries_them(
    ctx, smtp_server: SmtpTestServer, clock
):
    for email in ("ada@example.org", "bob@example.org", "carol@example.org"):
        add_subscriber(ctx.store, email, "", now=clock())
    smtp_server.handler.rcpt_reply = lambda address, _: (
        "552 5.3.4 message too big for this mailbox" if address.startswith("bob@") else None
    )
    upcoming, _ = app.preview_digest(ctx)
    assert upcoming is not None
    summary = app.send_now(ctx)
    client = operator_client(ctx)

    page = client.get(f"/admin/digests/{summary.digest_id}").text

    assert re.search(r'data-count="sent">2<', page) and re.search(r'data-count="failed">1<', page)
    assert "bob@example.org" in page and "552 5.3.4 message too big for this mailbox" in page
    shown = re.findall(r"<li>(?:<a [^>]*>)?([^<]+)<", page.split('id="articles"')[1])
    assert [html.unescape(t).strip() for t in shown] == [a.title for a in upcoming.articles]

    smtp_server.handler.rcpt_reply = None  # the cause is fixed
    retried = client.post(
        f"/admin/digests/{summary.digest_id}/retry", data={"csrf_token": form_token(page)}
    )
    client.app.state.retries.join(timeout=60)  # type: ignore[attr-defined]

    assert retried.status_code == 200 and "queued again and sent" in retried.text
    after = client.get(f"/admin/digests/{summary.digest_id}").text
    assert "The last retry queued 1 deliveries again: 1 sent, 0 failed." in after
    assert re.search(r'data-count="sent">3<', after) and 'id="no-failures"' in after
    assert sorted(smtp_server.handler.recipients()).count("bob@example.org") == 1


@pytest.mark.parametrize("url", ["/admin/digests/999", "/admin/digests/99999999999999999999999"])
def test_an_unknown_digest_is_404(ctx, url):
    assert operator_client(ctx).get(url).status_code == 404
