"""The signed links from emails, over HTTP: unsubscribe (page and RFC 8058 one-click), confirm."""

from __future__ import annotations

import base64
import re
import warnings
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from newsletter import app
from newsletter.app import links
from newsletter.models import SubscriberState
from newsletter.signing import Signer
from newsletter.store import subscribers as rows
from newsletter.store.schema import used_tokens
from newsletter.subscribers import add_subscriber, remove_subscriber
from newsletter.web import create_app
from tests.smtp_servers import SmtpTestServer

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

BASE = "https://news.example.org"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def ctx(make_context: Callable[..., app.Context]) -> app.Context:
    return make_context()


@pytest.fixture
def client(ctx: app.Context) -> TestClient:
    return TestClient(create_app(ctx))


def path_of(url: str) -> str:
    assert url.startswith(BASE + "/"), url
    return url[len(BASE) :]


def state_of(ctx: app.Context, subscriber_id: int) -> SubscriberState:
    with ctx.store.atomic() as conn:
        found = rows.get_by_id(conn, subscriber_id)
    assert found is not None
    return found.state


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tampered_tokens(
    ctx: app.Context, public_id: str, other_id: str, purpose: str
) -> dict[str, str]:
    """Tokens that must all be refused with 400 for ``purpose``."""
    good = ctx.signer.make(purpose, public_id, now=ctx.clock())
    body, mac = good.split(".")
    other = "confirm" if purpose == "unsubscribe" else "unsubscribe"
    forged_body = _b64(f"{purpose}:{other_id}:{int(ctx.clock().timestamp())}".encode())
    return {
        "mac changed": f"{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
        "other subscriber, same mac": f"{forged_body}.{mac}",
        "truncated": good[:-5],
        "garbage": "not-a-token",
        "no mac": body,
        "padded": f"{body}.{mac}==",
        "foreign secret": Signer("some-other-newsletter-secret").make(
            purpose, public_id, now=ctx.clock()
        ),
        "other purpose": ctx.signer.make(other, public_id, now=ctx.clock()),
    }


# --- unsubscribe -----------------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_changes_nothing(ctx, client, clock):
    ada = add_subscriber(ctx.store, "ada.lovelace@example.org", "Ada", now=clock())

    response = client.get(path_of(ctx.unsubscribe_url(ada.public_id)))

    assert response.status_code == 200
    assert "Unsubscribe?" in response.text
    assert "ad***@example.org" in response.text  # recognizable, not the whole address
    assert "ada.lovelace@example.org" not in response.text
    assert '<form method="post">' in response.text
    assert response.headers["referrer-policy"] == "no-referrer"  # the token is in the URL
    assert state_of(ctx, ada.id) is SubscriberState.ACTIVE


def test_page_post_unsubscribes_and_twice_is_friendly(ctx, client, clock):
    ada = add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    url = path_of(ctx.unsubscribe_url(ada.public_id))

    first = client.post(url, data={"confirm": "1"})
    second = client.post(url, data={"confirm": "1"})
    page = client.get(url)

    assert first.status_code == 200 and "You're unsubscribed" in first.text
    assert state_of(ctx, ada.id) is SubscriberState.UNSUBSCRIBED
    assert second.status_code == 200 and "Already unsubscribed" in second.text
    assert page.status_code == 200 and "Already unsubscribed" in page.text


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_without_a_page(ctx, client, clock, encoding):
    ada = add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    url = path_of(ctx.unsubscribe_url(ada.public_id))

    def one_click():
        if encoding == "multipart":  # RFC 8058 says SHOULD be multipart/form-data
            return client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        return client.post(url, data=ONE_CLICK)

    first, second = one_click(), one_click()

    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    assert first.text == "unsubscribed"
    assert second.status_code == 200 and second.text == "already unsubscribed"
    assert state_of(ctx, ada.id) is SubscriberState.UNSUBSCRIBED


TEN_MB = 10 * 1024 * 1024


def _chunks(data: bytes, size: int = 1 << 20):
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("sent", ["with its length", "chunked"])
def test_a_huge_post_to_an_unsubscribe_link_is_413_and_unsubscribes_nobody(
    ctx, client, clock, sent
):
    """The size is checked before anything changes (issue #15: a 413 that unsubscribed)."""
    ada = add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    url = path_of(ctx.unsubscribe_url(ada.public_id))
    payload = b"List-Unsubscribe=One-Click&padding=" + b"x" * TEN_MB
    headers = {"content-type": "application/x-www-form-urlencoded"}

    if sent == "chunked":  # no Content-Length: the limit bites while reading
        response = client.post(url, content=_chunks(payload), headers=headers)
    else:
        response = client.post(url, content=payload, headers=headers)

    assert response.status_code == 413
    assert state_of(ctx, ada.id) is SubscriberState.ACTIVE


def test_a_huge_post_to_a_confirm_link_is_413_and_confirms_nothing(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)

    response = client.post(path_of(ctx.confirm_url(pending.public_id)), content=b"x" * TEN_MB)

    assert response.status_code == 413
    assert state_of(ctx, pending.id) is SubscriberState.PENDING
    assert used_token_rows(ctx) == 0  # the link still works


def test_a_pending_or_bounced_address_can_unsubscribe_too(ctx, client, clock):
    pending = add_subscriber(ctx.store, "p@example.org", now=clock(), double_opt_in=True)

    response = client.post(path_of(ctx.unsubscribe_url(pending.public_id)), data=ONE_CLICK)

    assert response.text == "unsubscribed"
    assert state_of(ctx, pending.id) is SubscriberState.UNSUBSCRIBED


@pytest.mark.parametrize(
    "case",
    [
        "mac changed",
        "other subscriber, same mac",
        "truncated",
        "garbage",
        "no mac",
        "padded",
        "foreign secret",
        "other purpose",
    ],
)
def test_tampered_or_foreign_unsubscribe_token_is_400_and_changes_nothing(ctx, client, clock, case):
    ada = add_subscriber(ctx.store, "ada@example.org", now=clock())
    bob = add_subscriber(ctx.store, "bob@example.org", now=clock())  # the "other subscriber"
    token = tampered_tokens(ctx, ada.public_id, bob.public_id, "unsubscribe")[case]

    page = client.get(f"/unsubscribe/{token}")
    form = client.post(f"/unsubscribe/{token}", data={"confirm": "1"})
    one_click = client.post(f"/unsubscribe/{token}", data=ONE_CLICK)

    assert page.status_code == form.status_code == one_click.status_code == 400
    assert "This link is not valid" in page.text and "Nothing was changed" in page.text
    assert one_click.headers["content-type"].startswith("text/plain")
    with ctx.store.atomic() as conn:
        assert rows.count_by_state(conn) == {"active": 2}


def test_unsubscribe_links_never_expire(ctx, client, clock):
    ada = add_subscriber(ctx.store, "ada@example.org", now=clock())
    url = path_of(ctx.unsubscribe_url(ada.public_id))
    clock.advance(days=20 * 366)  # an email kept for twenty years

    page = client.get(url)
    one_click = client.post(url, data=ONE_CLICK)

    assert page.status_code == 200 and "Unsubscribe?" in page.text
    assert one_click.status_code == 200 and one_click.text == "unsubscribed"
    assert state_of(ctx, ada.id) is SubscriberState.UNSUBSCRIBED


@pytest.mark.parametrize("subject", [4242, "sNoSuchPublicId12345"])
def test_a_link_for_an_unknown_subscriber_is_400(ctx, client, clock, subject):
    add_subscriber(ctx.store, "ada@example.org", now=clock())
    token = ctx.signer.make("unsubscribe", subject, now=ctx.clock())
    assert client.get(f"/unsubscribe/{token}").status_code == 400
    assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 400


def test_the_link_in_a_sent_digest_unsubscribes_with_one_click(
    make_context, smtp_server: SmtpTestServer, clock
):
    """End to end: the List-Unsubscribe URL of a real message, POSTed as a mailbox would."""
    ctx = make_context(smtp={"port": smtp_server.port})
    client = TestClient(create_app(ctx))
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    add_subscriber(ctx.store, "bob@example.org", "Bob", now=clock())
    app.send_now(ctx)
    ada_message = next(m for m in smtp_server.messages() if "ada@" in m["To"])
    header = re.search(r"<(https://[^>]+)>", ada_message["List-Unsubscribe"])
    assert header is not None

    response = client.post(path_of(header.group(1)), data=ONE_CLICK)

    assert response.status_code == 200
    with ctx.store.atomic() as conn:
        assert rows.states_of(conn, ["ada@example.org", "bob@example.org"]) == {
            "ada@example.org": "unsubscribed",
            "bob@example.org": "active",
        }


# --- confirm ---------------------------------------------------------------------------


def used_token_rows(ctx: app.Context) -> int:
    with ctx.store.atomic() as conn:
        return int(conn.execute(select(func.count()).select_from(used_tokens)).scalar_one())


def test_confirm_get_shows_a_button_then_post_activates(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    url = path_of(ctx.confirm_url(pending.public_id))

    page = client.get(url)
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert state_of(ctx, pending.id) is SubscriberState.PENDING  # a GET changes nothing

    done = client.post(url)

    assert done.status_code == 200 and "You're subscribed" in done.text
    assert state_of(ctx, pending.id) is SubscriberState.ACTIVE
    assert used_token_rows(ctx) == 1


def test_replayed_confirm_link_answers_already_confirmed(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    url = path_of(ctx.confirm_url(pending.public_id))
    client.post(url)

    replay_post = client.post(url)
    replay_get = client.get(url)

    assert replay_post.status_code == replay_get.status_code == 200
    assert "Already confirmed" in replay_post.text and "Already confirmed" in replay_get.text
    assert used_token_rows(ctx) == 1


def test_replay_after_leaving_and_asking_again_does_not_confirm(ctx, client, clock):
    """An old, used link cannot confirm a new request: that needs the new email's link."""
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    old = path_of(ctx.confirm_url(pending.public_id))
    client.post(old)
    clock.advance(minutes=5)
    remove_subscriber(ctx.store, "new@example.org", now=clock())
    add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)

    replay = client.post(old)

    assert replay.status_code == 200 and "This link was already used" in replay.text
    assert state_of(ctx, pending.id) is SubscriberState.PENDING
    fresh = path_of(ctx.confirm_url(pending.public_id))
    assert client.post(fresh).status_code == 200
    assert state_of(ctx, pending.id) is SubscriberState.ACTIVE


def test_confirm_link_of_an_address_removed_since_is_stale(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    url = path_of(ctx.confirm_url(pending.public_id))
    remove_subscriber(ctx.store, "new@example.org", now=clock())

    page, post = client.get(url), client.post(url)

    assert "no longer valid" in page.text and "no longer valid" in post.text
    assert state_of(ctx, pending.id) is SubscriberState.UNSUBSCRIBED


def test_expired_confirm_link_is_410_and_changes_nothing(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    url = path_of(ctx.confirm_url(pending.public_id))
    clock.advance(days=links.CONFIRM_MAX_AGE.days, seconds=1)

    page, post = client.get(url), client.post(url)

    assert page.status_code == post.status_code == 410
    assert "This link has expired" in post.text and "subscribe again" in post.text
    assert state_of(ctx, pending.id) is SubscriberState.PENDING
    assert used_token_rows(ctx) == 0


@pytest.mark.parametrize(
    "case",
    [
        "mac changed",
        "other subscriber, same mac",
        "garbage",
        "padded",
        "foreign secret",
        "other purpose",
    ],
)
def test_tampered_confirm_token_is_400_and_changes_nothing(ctx, client, clock, case):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    other = add_subscriber(ctx.store, "other@example.org", now=clock(), double_opt_in=True)
    token = tampered_tokens(ctx, pending.public_id, other.public_id, "confirm")[case]

    page, post = client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}")

    assert page.status_code == post.status_code == 400
    assert state_of(ctx, pending.id) is state_of(ctx, other.id) is SubscriberState.PENDING
    assert used_token_rows(ctx) == 0


def test_used_tokens_are_forgotten_once_they_have_expired(ctx, client, clock):
    first = add_subscriber(ctx.store, "a@example.org", now=clock(), double_opt_in=True)
    client.post(path_of(ctx.confirm_url(first.public_id)))
    clock.advance(days=links.CONFIRM_MAX_AGE.days + 1)
    second = add_subscriber(ctx.store, "b@example.org", now=clock(), double_opt_in=True)

    client.post(path_of(ctx.confirm_url(second.public_id)))

    assert used_token_rows(ctx) == 1  # only the second, still-valid one is kept


def test_an_old_config_with_token_max_age_days_still_loads_and_links_do_not_expire(
    make_context, clock
):
    ctx = make_context(web={"token_max_age_days": 30})
    client = TestClient(create_app(ctx))
    ada = add_subscriber(ctx.store, "ada@example.org", now=clock())
    url = path_of(ctx.unsubscribe_url(ada.public_id))
    clock.advance(days=31)

    assert client.get(url).status_code == 200
