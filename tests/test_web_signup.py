"""Subscribing over HTTP: form and JSON, confirmation mail at a real SMTP server, rate limit."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage

import pytest

from newsletter import app
from newsletter.models import SubscriberState
from newsletter.store import subscribers as rows
from newsletter.subscribers import add_subscriber, remove_subscriber
from newsletter.web import create_app
from newsletter.web.ratelimit import SlidingWindow
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

BASE = "https://news.example.org"


@pytest.fixture
def ctx(make_context: Callable[..., app.Context], smtp_server: SmtpTestServer) -> app.Context:
    return make_context(smtp={"port": smtp_server.port})


@pytest.fixture
def client(ctx: app.Context) -> TestClient:
    return TestClient(create_app(ctx))


def state_of(ctx: app.Context, email: str) -> SubscriberState | None:
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, email)
    return found.state if found else None


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


def test_form_subscribe_mail_confirm_active(ctx, client, smtp_server: SmtpTestServer):
    form = client.get("/subscribe")
    assert form.status_code == 200 and 'name="email"' in form.text

    response = client.post("/subscribe", data={"email": "Zoe@Example.com", "name": "Zoë"})

    assert response.status_code == 200 and "Check your inbox" in response.text
    assert state_of(ctx, "zoe@example.com") is SubscriberState.PENDING
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


def test_json_subscribe_mail_confirm_active(ctx, client, smtp_server: SmtpTestServer):
    response = client.post("/api/subscribe", json={"email": "ada@example.org", "name": "Ada"})

    assert response.status_code == 202
    assert response.json() == {
        "status": "pending",
        "message": "Check your inbox: we sent you a link to confirm your subscription.",
    }
    [message] = smtp_server.messages()
    assert client.post(confirm_path(message)).status_code == 200
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_an_active_address_gets_the_same_answer_and_no_mail(ctx, client, smtp_server, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    json_answer = client.post("/api/subscribe", json={"email": "ada@example.org"})
    form_answer = client.post("/subscribe", data={"email": "ada@example.org"})

    assert json_answer.status_code == 202 and "Check your inbox" in form_answer.text
    assert smtp_server.received == []
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_an_unsubscribed_address_comes_back_only_by_confirming(ctx, client, smtp_server, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    remove_subscriber(ctx.store, "ada@example.org", now=clock())

    client.post("/api/subscribe", json={"email": "ada@example.org"})

    assert state_of(ctx, "ada@example.org") is SubscriberState.PENDING
    client.post(confirm_path(smtp_server.messages()[0]))
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


def test_asking_again_while_pending_sends_a_fresh_link(ctx, client, smtp_server, clock):
    client.post("/api/subscribe", json={"email": "ada@example.org"})
    clock.advance(days=8)  # the first link has expired

    client.post("/api/subscribe", json={"email": "ada@example.org", "name": "Ada"})

    first, second = smtp_server.messages()
    assert client.post(confirm_path(first)).status_code == 410
    assert client.post(confirm_path(second)).status_code == 200
    assert state_of(ctx, "ada@example.org") is SubscriberState.ACTIVE


@pytest.mark.parametrize("address", ["not-an-address", "ada@", "a b@example.org", ""])
def test_invalid_address_is_422_with_one_line(ctx, client, smtp_server, address):
    json_answer = client.post("/api/subscribe", json={"email": address})
    form_answer = client.post("/subscribe", data={"email": address, "name": "Ada"})

    assert json_answer.status_code == form_answer.status_code == 422
    assert "is not a valid email address" in json_answer.json()["error"]
    assert "is not a valid email address" in form_answer.text
    assert 'value="Ada"' in form_answer.text  # what was typed is kept
    assert smtp_server.received == []


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
    limited_form = client.post("/subscribe", data={"email": "user6@example.org"})

    assert answers == [202] * 5
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert "too many requests" in limited.json()["error"]
    assert limited_form.status_code == 429 and "Too many attempts" in limited_form.text
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


def test_smtp_down_is_503_and_the_address_can_try_again(make_context, clock):
    from newsletter.inbox import free_port

    ctx = make_context(smtp={"port": free_port(), "timeout": 2})
    client = TestClient(create_app(ctx))

    json_answer = client.post("/api/subscribe", json={"email": "ada@example.org"})
    form_answer = client.post("/subscribe", data={"email": "ada@example.org"})

    assert json_answer.status_code == form_answer.status_code == 503
    assert "try again later" in json_answer.json()["error"]
    assert "try again later" in form_answer.text
    assert state_of(ctx, "ada@example.org") is None  # nothing changed


def test_a_filled_honeypot_gets_a_polite_no_op(ctx, client, smtp_server):
    response = client.post(
        "/subscribe", data={"email": "bot@example.org", "website": "http://spam.example"}
    )

    assert response.status_code == 200 and "Check your inbox" in response.text
    assert state_of(ctx, "bot@example.org") is None
    assert smtp_server.received == []


def test_a_huge_body_is_refused(client):
    response = client.post("/subscribe", data={"email": "a@example.org", "name": "x" * 100_000})
    assert response.status_code == 413


def test_the_limiter_forgets_the_least_recently_seen_address_first(clock):
    limiter = SlidingWindow(1, timedelta(minutes=1), clock=clock, max_keys=2)
    assert limiter.hit("a") == 0 and limiter.hit("b") == 0
    assert limiter.hit("a") == 60  # blocked, and now the most recently seen

    assert limiter.hit("c") == 0  # "b" is forgotten to make room

    assert len(limiter) == 2
    assert limiter.hit("a") > 0
    assert limiter.hit("b") == 0


def test_the_same_new_address_twice_at_once_gets_one_row_and_a_mail(
    ctx, smtp_server: SmtpTestServer, monkeypatch: pytest.MonkeyPatch, clock
):
    """Another request inserts the address between our read and our insert."""
    read = rows.get_by_email
    reads: list[str] = []
    raced = []

    def read_while_another_request_commits(conn, email):
        found = read(conn, email)
        reads.append(email)
        # The second read is the one right before the insert: the other request wins there.
        if found is None and len(reads) == 2:
            raced.append(email)
            with ctx.store.atomic() as other:  # the other request, committed first
                rows.insert_many(
                    other, [(email, "", {})], state=SubscriberState.PENDING, now=clock()
                )
        return found

    monkeypatch.setattr(rows, "get_by_email", read_while_another_request_commits)

    result = app.subscriptions.subscribe(ctx, "race@example.org", "Racer")

    assert raced == ["race@example.org"]
    assert result.mailed
    assert state_of(ctx, "race@example.org") is SubscriberState.PENDING
    assert smtp_server.handler.recipients() == ["race@example.org"]
