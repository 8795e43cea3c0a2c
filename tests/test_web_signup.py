"""Subscribing over HTTP: form and JSON, queued, mailed by the confirmation queue to a real SMTP
server; and the abuse a public endpoint meets (issue #15): mail bombing, forged client
addresses, cross-site posts, a membership oracle, names carrying spam, absurd bodies."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from newsletter import app
from newsletter.app import confirmations, subscriptions
from newsletter.errors import SubscriberError
from newsletter.inbox import free_port
from newsletter.models import SubscriberState
from newsletter.store import subscribers as rows
from newsletter.store.schema import signup_requests
from newsletter.subscribers import add_subscriber, remove_subscriber
from newsletter.subscribers.addresses import MAX_SIGNUP_NAME_CHARS, signup_name
from newsletter.web import create_app
from newsletter.web.ratelimit import SlidingWindow
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

BASE = "https://news.example.org"
OURS = {"Origin": BASE}  # what a browser sends with the form from our own page


@pytest.fixture
def ctx(make_context: Callable[..., app.Context], smtp_server: SmtpTestServer) -> app.Context:
    return make_context(smtp={"port": smtp_server.port})


@pytest.fixture
def client(ctx: app.Context) -> TestClient:
    return TestClient(create_app(ctx))


def deliver(ctx: app.Context) -> confirmations.ConfirmationRun:
    """What ``serve``'s confirmation queue does in the background."""
    run = confirmations.deliver_confirmations(ctx)
    assert run is not None
    return run


def state_of(ctx: app.Context, email: str) -> SubscriberState | None:
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, email)
    return found.state if found else None


def queued(ctx: app.Context) -> int:
    with ctx.store.atomic() as conn:
        return int(conn.execute(select(func.count()).select_from(signup_requests)).scalar_one())


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def confirm_path(message: EmailMessage) -> str:
    found = re.search(re.escape(BASE) + r"(/confirm/[A-Za-z0-9_\-.]+)", body(message, "plain"))
    assert found is not None, "no confirmation link in the text part"
    return found.group(1)


# --- signing up ------------------------------------------------------------------------


def test_form_subscribe_queue_mail_confirm_active(ctx, client, smtp_server: SmtpTestServer):
    form = client.get("/subscribe")
    assert form.status_code == 200 and 'name="email"' in form.text
    assert form.headers["referrer-policy"] == "same-origin"  # so the browser sends its Origin

    response = client.post(
        "/subscribe", data={"email": "Zoe@Example.com", "name": "Zoë"}, headers=OURS
    )

    assert response.status_code == 200 and "Check your inbox" in response.text
    assert state_of(ctx, "zoe@example.com") is None and queued(ctx) == 1  # only recorded
    assert smtp_server.received == []

    run = deliver(ctx)

    assert (run.requests, run.queued, run.sent) == (1, 1, 1)
    assert state_of(ctx, "zoe@example.com") is SubscriberState.PENDING and queued(ctx) == 0
    [message] = smtp_server.messages()
    assert smtp_server.received[0].rcpt_tos == ["zoe@example.com"]
    assert message["Subject"] == "Please confirm your subscription to The Daily Digest"
    assert message["To"].addresses[0].display_name == "Zoë"
    assert message["From"].addresses[0].addr_spec == "digest@example.org"
    assert "Hello Zoë," in body(message, "plain")
    link = confirm_path(message)
    html = body(message, "html")
    assert f'href="{BASE}{link}"' in html and "Hello Zoë," in html
    assert 'style="' in html  # CSS inlined for mail clients

    assert "Yes, subscribe me" in client.get(link).text
    confirmed = client.post(link)

    assert confirmed.status_code == 200 and "You're subscribed" in confirmed.text
    assert state_of(ctx, "zoe@example.com") is SubscriberState.ACTIVE


def test_json_subscribe_queue_mail_confirm_active(ctx, client, smtp_server: SmtpTestServer):
    response = client.post("/api/subscribe", json={"email": "ada@example.org", "name": "Ada"})

    assert response.status_code == 202
    assert response.json() == {
        "status": "pending",
        "message": "Check your inbox: we sent you a link to confirm your subscription.",
    }
    deliver(ctx)
    [message] = smtp_server.messages()
    assert client.post(confirm_path(message)).status_code == 200
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_an_active_address_gets_the_same_answer_and_no_mail(ctx, client, smtp_server, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    json_answer = client.post("/api/subscribe", json={"email": "ada@example.org"})
    form_answer = client.post("/subscribe", data={"email": "ada@example.org"}, headers=OURS)
    deliver(ctx)

    assert json_answer.status_code == 202 and "Check your inbox" in form_answer.text
    assert smtp_server.received == []
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_an_unsubscribed_address_comes_back_only_by_confirming(ctx, client, smtp_server, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    remove_subscriber(ctx.store, "ada@example.org", now=clock())

    client.post("/api/subscribe", json={"email": "ada@example.org"})
    deliver(ctx)

    assert state_of(ctx, "ada@example.org") is SubscriberState.PENDING
    client.post(confirm_path(smtp_server.messages()[0]))
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_asking_again_while_pending_sends_a_fresh_link(ctx, client, smtp_server, clock):
    client.post("/api/subscribe", json={"email": "ada@example.org"})
    deliver(ctx)
    clock.advance(days=8)  # the first link has expired

    client.post("/api/subscribe", json={"email": "ada@example.org", "name": "Ada"})
    deliver(ctx)

    first, second = smtp_server.messages()
    assert client.post(confirm_path(first)).status_code == 410
    assert client.post(confirm_path(second)).status_code == 200
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


@pytest.mark.parametrize("address", ["not-an-address", "ada@", "a b@example.org", ""])
def test_invalid_address_is_422_with_one_line(ctx, client, smtp_server, address):
    json_answer = client.post("/api/subscribe", json={"email": address})
    form_answer = client.post("/subscribe", data={"email": address, "name": "Ada"}, headers=OURS)

    assert json_answer.status_code == form_answer.status_code == 422
    assert "is not a valid email address" in json_answer.json()["error"]
    assert "is not a valid email address" in form_answer.text
    assert 'value="Ada"' in form_answer.text  # what was typed is kept
    assert queued(ctx) == 0


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"name": "no email"}', b'{"email": 42}', b"\xff\xfe"],
)
def test_malformed_json_is_400(client, payload):
    response = client.post(
        "/api/subscribe", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]


def test_rate_limited_per_ip_with_a_sliding_window(ctx, client, smtp_server, clock):
    answers = [
        client.post("/api/subscribe", json={"email": f"user{i}@example.org"}).status_code
        for i in range(5)
    ]
    limited = client.post("/api/subscribe", json={"email": "user5@example.org"})
    limited_form = client.post("/subscribe", data={"email": "user6@example.org"}, headers=OURS)

    assert answers == [202] * 5
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert "too many requests" in limited.json()["error"]
    assert limited_form.status_code == 429 and "Too many attempts" in limited_form.text
    deliver(ctx)
    assert len(smtp_server.received) == 5
    assert state_of(ctx, "user5@example.org") is None

    clock.advance(seconds=30)
    assert client.post("/api/subscribe", json={"email": "x@example.org"}).status_code == 429
    clock.advance(seconds=31)  # the first five hits left the window
    assert client.post("/api/subscribe", json={"email": "x@example.org"}).status_code == 202


def test_the_limit_is_per_ip(ctx, smtp_server):
    web = create_app(ctx, subscribe_limit=1)
    first = TestClient(web, client=("203.0.113.1", 5000))
    second = TestClient(web, client=("203.0.113.2", 5000))

    assert first.post("/api/subscribe", json={"email": "a@example.org"}).status_code == 202
    assert first.post("/api/subscribe", json={"email": "b@example.org"}).status_code == 429
    assert second.post("/api/subscribe", json={"email": "c@example.org"}).status_code == 202


def test_a_filled_honeypot_gets_a_polite_no_op(ctx, client, smtp_server):
    response = client.post(
        "/subscribe",
        data={"email": "bot@example.org", "website": "http://spam.example"},
        headers=OURS,
    )

    assert response.status_code == 200 and "Check your inbox" in response.text
    assert queued(ctx) == 0


def test_a_huge_body_is_refused(client):
    response = client.post(
        "/subscribe", data={"email": "a@example.org", "name": "x" * 100_000}, headers=OURS
    )
    assert response.status_code == 413


def test_the_limiter_forgets_the_least_recently_seen_address_first(clock):
    limiter = SlidingWindow(1, timedelta(minutes=1), clock=clock, max_keys=2)
    assert limiter.hit("a") == 0 and limiter.hit("b") == 0
    assert limiter.hit("a") == 60  # blocked, and now the most recently seen

    assert limiter.hit("c") == 0  # "b" is forgotten to make room

    assert len(limiter) == 2
    assert limiter.hit("a") > 0
    assert limiter.hit("b") == 0


def test_an_address_another_process_adds_meanwhile_gets_one_row_and_one_mail(
    ctx, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch, clock
):
    """An import inserts the address between the queue's read and its insert."""
    subscriptions.record_signup(ctx, "race@example.org", "Racer")
    read = rows.get_by_email
    reads: list[str] = []

    def read_while_another_process_commits(conn, email):
        found = read(conn, email)
        reads.append(email)
        if found is None and len(reads) == 2:  # right before the queue's insert
            with ctx.store.atomic() as other:
                rows.insert_many(
                    other, [(email, "", {})], state=SubscriberState.PENDING, now=clock()
                )
        return found

    monkeypatch.setattr(rows, "get_by_email", read_while_another_process_commits)

    run = deliver(ctx)

    assert len(reads) > 2  # the first attempt met the other insert, and was done again
    assert run.queued == 1
    assert state_of(ctx, "race@example.org") is SubscriberState.PENDING
    assert smtp_server.handler.recipients() == ["race@example.org"]


def test_the_queue_is_bounded_and_a_full_queue_answers_the_same(ctx, client, monkeypatch):
    monkeypatch.setattr(subscriptions, "MAX_QUEUED_REQUESTS", 3)
    web = TestClient(create_app(ctx, subscribe_limit=100))

    answers = [
        web.post("/api/subscribe", json={"email": f"u{i}@example.org"}).status_code
        for i in range(5)
    ]

    assert answers == [202] * 5 and queued(ctx) == 3


# --- mail bombing ----------------------------------------------------------------------


def test_a_victim_gets_one_email_an_hour_and_a_few_a_day(ctx, smtp_server, clock):
    """20 requests for one address from 20 "different" clients (issue #15): one email."""
    web = TestClient(create_app(ctx, subscribe_limit=100))
    for i in range(20):
        answer = web.post(
            "/api/subscribe",
            json={"email": "victim@example.org"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        assert answer.status_code == 202  # throttled or not, the same answer
        if i % 5 == 4:
            deliver(ctx)  # the queue runs now and then meanwhile

    assert smtp_server.handler.recipients() == ["victim@example.org"]

    clock.advance(minutes=59)
    web.post("/api/subscribe", json={"email": "victim@example.org"})
    deliver(ctx)
    assert len(smtp_server.received) == 1  # not within the hour
    for _ in range(5):
        clock.advance(minutes=61)
        web.post("/api/subscribe", json={"email": "victim@example.org"})
        deliver(ctx)
    assert len(smtp_server.received) == confirmations.MAX_PER_DAY  # then not within the day
    clock.advance(hours=24)
    web.post("/api/subscribe", json={"email": "victim@example.org"})
    deliver(ctx)
    assert len(smtp_server.received) == confirmations.MAX_PER_DAY + 1


def test_x_forwarded_for_counts_only_from_trusted_proxies(make_context, smtp_server):
    ctx = make_context(
        smtp={"port": smtp_server.port}, web={"trusted_proxies": ["10.0.0.0/8", "::1"]}
    )
    web = create_app(ctx, subscribe_limit=1)
    proxy = TestClient(web, client=("10.1.2.3", 5000))
    stranger = TestClient(web, client=("192.0.2.1", 5000))

    def post(who: TestClient, forwarded: str, n: int) -> int:
        return who.post(
            "/api/subscribe",
            json={"email": f"user{n}@example.org"},
            headers={"X-Forwarded-For": forwarded},
        ).status_code

    # Behind the proxy each client has its own limit: the last address not a proxy's.
    assert post(proxy, "198.51.100.1", 1) == 202
    assert post(proxy, "198.51.100.2", 2) == 202
    assert post(proxy, "203.0.113.7, 198.51.100.1", 3) == 429  # a client cannot pick its name
    assert post(proxy, "198.51.100.3, 10.9.9.9", 4) == 202  # a second proxy hop is skipped
    # Anyone else's header is ignored: rotating it does not reset the limit.
    assert post(stranger, "198.51.100.50", 5) == 202
    assert post(stranger, "198.51.100.51", 6) == 429


def test_a_wrong_trusted_proxy_is_one_line(make_settings):
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"web\.trusted_proxies.*is not an IP address"):
        make_settings(web={"trusted_proxies": ["10.0.0.0/8", "proxy.example.org"]})


# --- cross-site posts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "https://news.example.org.evil.example"},
        {"Origin": "http://news.example.org"},  # not the scheme of base_url
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {},
    ],
)
def test_a_form_post_from_another_site_is_403_and_changes_nothing(ctx, client, headers):
    response = client.post("/subscribe", data={"email": "ada@example.org"}, headers=headers)

    assert response.status_code == 403
    assert "can only be sent from its own page" in response.text
    assert queued(ctx) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": BASE},
        {"Origin": "https://NEWS.example.org:443"},
        {"Referer": BASE + "/subscribe"},
        {"Origin": "null", "Referer": BASE + "/subscribe"},
    ],
)
def test_a_form_post_from_our_own_page_is_taken(ctx, client, headers):
    response = client.post("/subscribe", data={"email": "ada@example.org"}, headers=headers)
    assert response.status_code == 200 and queued(ctx) == 1


def test_the_form_is_taken_from_the_local_server_itself(ctx):
    """``serve`` on loopback is reached at its own address, not at base_url."""
    local = TestClient(create_app(ctx), base_url="http://127.0.0.1:8000")

    ours = local.post(
        "/subscribe", data={"email": "a@example.org"}, headers={"Origin": "http://127.0.0.1:8000"}
    )
    other_port = local.post(
        "/subscribe", data={"email": "b@example.org"}, headers={"Origin": "http://127.0.0.1:9"}
    )

    assert (ours.status_code, other_port.status_code) == (200, 403)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_the_api_takes_only_application_json(ctx, client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(
        "/api/subscribe", content=json.dumps({"email": "ada@example.org"}), headers=headers
    )

    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert queued(ctx) == 0


# --- no membership oracle --------------------------------------------------------------


def _page_without_nonce(response: Any) -> str:
    """The page as every visitor gets it: the per-page script nonce left out."""
    nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert nonce is not None
    return response.text.replace(nonce.group(1), "NONCE")


@contextmanager
def statements(ctx: app.Context) -> Iterator[list[str]]:
    """The SQL statements run on the store meanwhile."""
    ran: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        ran.append(statement)

    event.listen(ctx.store.engine, "before_cursor_execute", note)
    try:
        yield ran
    finally:
        event.remove(ctx.store.engine, "before_cursor_execute", note)


@pytest.mark.parametrize("smtp_up", [True, False])
def test_members_and_strangers_get_the_same_answer_from_the_same_work(
    make_context, smtp_server, clock, smtp_up
):
    """Same status, same body, and the same database work (so about the same time), for an
    active member, an unsubscribed one and a stranger, with the mail server up or down."""
    ctx = make_context(smtp={"port": smtp_server.port if smtp_up else free_port()})
    add_subscriber(ctx.store, "member@example.org", "Member", now=clock())
    add_subscriber(ctx.store, "left@example.org", "Left", now=clock())
    remove_subscriber(ctx.store, "left@example.org", now=clock())
    web = TestClient(create_app(ctx, subscribe_limit=100))
    answers = []
    for email in ("member@example.org", "left@example.org", "stranger@example.org"):
        with statements(ctx) as api_work:
            api = web.post("/api/subscribe", json={"email": email, "name": "Ann"})
        with statements(ctx) as form_work:
            form = web.post("/subscribe", data={"email": email, "name": "Ann"}, headers=OURS)
        answers.append(
            (
                api.status_code,
                api.text,
                form.status_code,
                _page_without_nonce(form),
                api_work,
                form_work,
            )
        )

    assert answers[0][0] == 202 and answers[0][2] == 200
    assert answers[0] == answers[1] == answers[2]
    assert smtp_server.received == []  # nothing is mailed inside a request


# --- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Win big at http://spam.example", "web addresses"),
        ("https now", "web addresses"),
        ("see www.spam", "web addresses"),
        ("Visit spam.example today", "web addresses"),
        ("mail me at eve@example.org", "web addresses"),
        ("ftp://files", "web addresses"),
        ("пример.рф", "web addresses"),
        ("Eve\x1b[31m", "control or invisible"),
        ("Eve\u202eevil", "control or invisible"),
        ("Eve\nBcc: x", "control or invisible"),
        ("Ev\u200be", "control or invisible"),
        ("x" * (MAX_SIGNUP_NAME_CHARS + 1), "too long"),
    ],
)
def test_names_carrying_links_or_hidden_text_are_422(ctx, client, name, problem):
    api = client.post("/api/subscribe", json={"email": "ada@example.org", "name": name})
    form = client.post("/subscribe", data={"email": "ada@example.org", "name": name}, headers=OURS)

    assert api.status_code == form.status_code == 422
    assert problem in api.json()["error"]
    assert queued(ctx) == 0


@pytest.mark.parametrize(
    "name", ["Zoë", "J.R.R. Tolkien", "Dr. Who", "O'Brien", "José-María", "李小龍", "Anne & Co"]
)
def test_ordinary_names_are_taken(name):
    assert signup_name(name) == name


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_a_sign_up_name_is_refused_or_short_visible_and_link_free(raw: str):
    try:
        name = signup_name(raw)
    except SubscriberError as exc:
        assert "\n" not in str(exc)
        return
    assert len(name) <= MAX_SIGNUP_NAME_CHARS
    assert name.replace("\u200c", "").replace("\u200d", "").isprintable()  # joiners stay
    assert name == name.strip()
    assert not re.search(r"(?i)https?|www\.|://", name)


def test_a_sign_up_never_renames_anyone(ctx, client, smtp_server, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada Lovelace", now=clock())
    remove_subscriber(ctx.store, "ada@example.org", now=clock())

    client.post("/api/subscribe", json={"email": "ada@example.org", "name": "Free Money"})
    deliver(ctx)

    with ctx.store.atomic() as conn:
        ada = rows.get_by_email(conn, "ada@example.org")
    assert ada is not None and ada.name == "Ada Lovelace"
    [message] = smtp_server.messages()
    assert message["To"].addresses[0].display_name == "Ada Lovelace"
    assert "Free Money" not in body(message, "plain")


# --- absurd bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 60_000,
        b'{"email": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"email": "a@example.org", "name": ' + b'{"x":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b'{"email": 1' + b"0" * 20_000 + b"}",
    ],
)
def test_deeply_nested_or_absurd_json_is_400_never_500(ctx, client, payload):
    response = client.post(
        "/api/subscribe", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert queued(ctx) == 0


def test_json_over_the_size_limit_is_413(ctx, client):
    payload = json.dumps({"email": "ada@example.org", "name": "x" * 200_000})
    response = client.post(
        "/api/subscribe", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and queued(ctx) == 0
