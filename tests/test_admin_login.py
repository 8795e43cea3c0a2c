"""Logging in to the admin pages: the guard, sessions, CSRF tokens and failed-login delays.

Real argon2id hashes, a real SQLite file, the app over Starlette's TestClient (https, as
behind the TLS proxy); the clock is frozen and moved by hand.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from http.cookies import SimpleCookie

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.app import Context, login, users
from newsletter.models import SubscriberState
from newsletter.store import subscribers as subscriber_rows
from newsletter.store import users as user_rows
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from newsletter.web.auth import DEVICE_COOKIE, SESSION_COOKIE
from tests.admin_login import PASSWORD, cheap_passwords, form_token, log_in
from tests.conftest import FrozenClock

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.usefixtures("cheap_passwords")
__all__ = ["cheap_passwords"]  # the fixture, imported for this module's tests

ADMIN_PAGES = [
    "/admin",
    "/admin/subscribers",
    "/admin/subscribers?q=ada&state=active",
    "/admin/subscribers.csv",
    "/admin/digests/1",
    "/preview",
    "/preview/email.html",
    "/preview/email.txt",
    "/preview/fingerprint",
]
ADMIN_FORMS = [
    "/admin/subscribers/add",
    "/admin/subscribers/unsubscribe",
    "/admin/digests/1/retry",
]


@pytest.fixture
def ctx(make_context: Callable[..., Context]) -> Context:
    ctx = make_context()
    users.add_user(ctx, "ada", PASSWORD)
    return ctx


def browser(ctx: Context) -> TestClient:
    return TestClient(create_app(ctx), base_url="https://testserver")


def set_cookies(response: object) -> dict[str, str]:
    """``name -> the whole Set-Cookie line`` of a response."""
    lines = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    return {line.split("=", 1)[0]: line for line in lines}


def state_of(ctx: Context, email: str) -> SubscriberState | None:
    with ctx.store.atomic() as conn:
        found = subscriber_rows.get_by_email(conn, email)
    return found.state if found else None


# --- the guard ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_each_admin_page_without_a_session_redirects_to_login(ctx, url):
    response = browser(ctx).get(url, follow_redirects=False)

    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login?next=")
    assert "Log in" in browser(ctx).get(location).text


@pytest.mark.parametrize("url", ADMIN_FORMS)
def test_each_admin_form_without_a_session_redirects_and_changes_nothing(ctx, clock, url):
    add_subscriber(ctx.store, "bob@example.org", "Bob", now=clock())

    response = browser(ctx).post(
        url, data={"email": "bob@example.org", "csrf_token": "x"}, follow_redirects=False
    )

    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert state_of(ctx, "bob@example.org") is SubscriberState.ACTIVE


def test_login_goes_on_to_the_page_asked_for_never_elsewhere(ctx):
    client = browser(ctx)
    asked = client.get("/admin/subscribers?state=active", follow_redirects=False)
    form = client.get(asked.headers["location"])
    assert 'name="next" value="/admin/subscribers?state=active"' in form.text

    for target, expected in [
        ("/admin/subscribers?state=active", "/admin/subscribers?state=active"),
        ("https://evil.example/admin", "/admin"),
        ("//evil.example/admin", "/admin"),
        ("/\\evil.example", "/admin"),
    ]:
        client.cookies.clear()
        page = client.get("/login")
        answer = client.post(
            "/login",
            data={
                "username": "ada",
                "password": PASSWORD,
                "csrf_token": form_token(page.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == expected


# --- sessions ----------------------------------------------------------------------------


def test_the_session_cookie_is_signed_httponly_lax_and_secure_over_https(ctx):
    client = browser(ctx)
    answer = log_in(client)

    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = set_cookies(answer)[SESSION_COOKIE]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert "Path=/" in cookie and f"Max-Age={int(login.SESSION_LIFETIME.total_seconds())}" in cookie
    assert client.get("/admin").status_code == 200

    value = SimpleCookie(cookie)[SESSION_COOKIE].value
    token, _, mac = value.rpartition(".")
    forged = f"{token}.{'A' * len(mac)}"
    for bad in (forged, "\xe9t\xe9.\xe9t\xe9", "", "." * 400):  # raw bytes, not only ASCII
        cookie = f"{SESSION_COOKIE}={bad}".encode("latin-1")
        answer = browser(ctx).get("/admin", headers={"cookie": cookie}, follow_redirects=False)
        assert answer.status_code == 303
    with ctx.store.atomic() as conn:  # the database keeps only the token's hash
        assert user_rows.get_session(conn, token, now=ctx.clock()) is None


def test_the_session_cookie_is_not_secure_with_a_plain_http_base_url(make_context):
    ctx = make_context(web={"base_url": "http://127.0.0.1:8000"})
    users.add_user(ctx, "ada", PASSWORD)
    answer = log_in(TestClient(create_app(ctx)))
    cookie = set_cookies(answer)[SESSION_COOKIE]
    assert "HttpOnly" in cookie and "Secure" not in cookie


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_a_session_expires(ctx, clock: FrozenClock):
    client = browser(ctx)
    log_in(client)
    clock.advance(seconds=login.SESSION_LIFETIME.total_seconds() - 1)
    assert client.get("/admin").status_code == 200

    clock.advance(seconds=2)

    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_for_every_copy_of_the_cookie(ctx):
    client = browser(ctx)
    log_in(client)
    stolen = client.cookies.get(SESSION_COOKIE)
    page = client.get("/admin")

    out = client.post("/logout", data={"csrf_token": form_token(page.text)}, follow_redirects=False)

    assert out.status_code == 303 and out.headers["location"] == "/login"
    replay = browser(ctx)
    replay.cookies.set(SESSION_COOKIE, stolen or "")
    assert replay.get("/admin", follow_redirects=False).status_code == 303


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_removing_a_user_ends_their_sessions(ctx):
    client = browser(ctx)
    log_in(client)
    assert client.get("/admin").status_code == 200

    users.remove_user(ctx, "ada")

    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert log_in(browser(ctx)).status_code == 403


def test_wrong_password_and_unknown_user_get_the_same_answer(ctx, monkeypatch):
    """Both verify an argon2id hash (a dummy for unknown names) and answer alike."""
    verified: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            verified.append(str(hash))
            return super().verify(hash, password)

    counting = CountingHasher()
    monkeypatch.setattr(users, "password_hasher", lambda: counting)

    wrong = log_in(browser(ctx), "ada", "not the password")
    unknown = log_in(browser(ctx), "nobody", "not the password")

    assert wrong.status_code == unknown.status_code == 403
    assert SESSION_COOKIE not in set_cookies(wrong) and SESSION_COOKIE not in set_cookies(unknown)

    def message(text: str) -> str:
        found = re.search(r'id="login-error">([^<]*)<', text)
        assert found is not None
        return found.group(1)

    assert message(wrong.text) == message(unknown.text) == "Wrong user name or password."
    assert len(verified) == 2 and all(h.startswith("$argon2id$") for h in verified)


def test_the_login_form_needs_its_own_token(ctx):
    client = browser(ctx)
    client.get("/login")

    for token in ("", "forged-token"):
        answer = client.post(
            "/login",
            data={"username": "ada", "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert answer.status_code == 403
        assert SESSION_COOKIE not in set_cookies(answer)


# --- CSRF on the admin forms ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token"], ids=["missing", "empty", "wrong"])
def test_admin_forms_refuse_a_missing_or_wrong_csrf_token_and_change_nothing(ctx, clock, token):
    add_subscriber(ctx.store, "bob@example.org", "Bob", now=clock())
    client = browser(ctx)
    log_in(client)
    fields = {"email": "bob@example.org"} | ({"csrf_token": token} if token is not None else {})

    unsubscribe = client.post("/admin/subscribers/unsubscribe", data=fields)
    add = client.post("/admin/subscribers/add", data=fields | {"email": "carol@example.org"})
    logout = client.post("/logout", data=fields)

    assert unsubscribe.status_code == add.status_code == logout.status_code == 403
    assert "Nothing was changed" in unsubscribe.text
    assert state_of(ctx, "bob@example.org") is SubscriberState.ACTIVE
    assert state_of(ctx, "carol@example.org") is None
    assert client.get("/admin").status_code == 200  # still logged in


def test_another_sessions_token_is_refused(ctx, clock):
    add_subscriber(ctx.store, "bob@example.org", "Bob", now=clock())
    users.add_user(ctx, "eve", PASSWORD)
    eve = browser(ctx)
    log_in(eve, "eve")
    eves_token = form_token(eve.get("/admin/subscribers").text)
    ada = browser(ctx)
    log_in(ada)

    answer = ada.post(
        "/admin/subscribers/unsubscribe",
        data={"email": "bob@example.org", "csrf_token": eves_token},
    )

    assert answer.status_code == 403
    assert state_of(ctx, "bob@example.org") is SubscriberState.ACTIVE


# --- failed-login delays -----------------------------------------------------------------


def attempt(ctx: Context, name: str, password: str, client: str = "198.51.100.7", **kw: object):
    return login.log_in(ctx, name, password, client=client, **kw)  # type: ignore[arg-type]


def test_delays_grow_exponentially_up_to_a_cap():
    delays = [login.delay_after(n).total_seconds() for n in range(1, 40)]
    free = login.FREE_FAILURES
    assert delays[:free] == [0] * free
    assert delays[free : free + 5] == [1, 2, 4, 8, 16]
    assert max(delays) == login.MAX_DELAY.total_seconds() == delays[-1]


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_repeated_wrong_passwords_are_slowed_down_then_the_right_one_works(ctx, clock):
    for _ in range(login.FREE_FAILURES):
        assert attempt(ctx, "ada", "wrong password").wait_seconds == 0
    assert attempt(ctx, "ada", "wrong password").user is None  # the first delayed failure

    blocked = attempt(ctx, "ada", PASSWORD)  # even the right password waits

    assert blocked.user is None and blocked.wait_seconds == 1
    clock.advance(seconds=1)
    assert attempt(ctx, "ada", "wrong password").user is None
    assert attempt(ctx, "ada", PASSWORD).wait_seconds == 2
    clock.advance(seconds=2)
    assert attempt(ctx, "ada", PASSWORD).user is not None  # the counters start again
    assert attempt(ctx, "ada", "wrong password").wait_seconds == 0


def test_the_delay_holds_per_client_across_user_names(ctx):
    for n in range(login.FREE_FAILURES + 1):
        attempt(ctx, f"guess{n}", "wrong password")

    assert attempt(ctx, "ada", PASSWORD).wait_seconds > 0  # this client waits
    assert attempt(ctx, "ada", PASSWORD, client="203.0.113.9").user is not None


def test_the_delay_holds_per_user_across_clients_but_not_for_the_owners_browser(ctx, clock):
    first = attempt(ctx, "ada", PASSWORD, client="192.0.2.1")  # the owner, earlier
    assert first.user is not None and first.device_cookie
    for n in range(login.FREE_FAILURES + 1):
        attempt(ctx, "ada", "wrong password", client=f"203.0.113.{n}")

    elsewhere = attempt(ctx, "ada", PASSWORD, client="203.0.113.200")
    owner = attempt(ctx, "ada", PASSWORD, client="192.0.2.1", device_cookie=first.device_cookie)

    assert elsewhere.user is None and elsewhere.wait_seconds > 0
    assert owner.user is not None  # the owner's browser is not locked out by the guesser


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_the_delay_survives_a_restart_and_holds_in_another_process(ctx, clock):
    for _ in range(login.FREE_FAILURES + 1):
        attempt(ctx, "ada", "wrong password")
    ctx.close()
    other = Context.open(ctx.settings, clock=clock)  # a new process on the same database
    try:
        assert attempt(other, "ada", PASSWORD).wait_seconds > 0
    finally:
        other.close()


def test_nobody_is_locked_out_for_longer_than_the_cap(ctx, clock):
    for _ in range(login.FREE_FAILURES + 12):  # 2**11 s would be past the cap
        attempt(ctx, "ada", "wrong password")
        clock.advance(seconds=login.MAX_DELAY.total_seconds())
    attempt(ctx, "ada", "wrong password")

    waiting = attempt(ctx, "ada", PASSWORD)

    assert 0 < waiting.wait_seconds <= login.MAX_DELAY.total_seconds()
    clock.advance(seconds=login.MAX_DELAY.total_seconds())
    assert attempt(ctx, "ada", PASSWORD).user is not None


def test_the_login_page_says_how_long_to_wait(ctx):
    client = browser(ctx)
    for _ in range(login.FREE_FAILURES + 1):
        log_in(client, "ada", "wrong password")

    answer = log_in(client, "ada", PASSWORD)

    assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
    assert "Too many failed attempts: try again in 1 second." in answer.text
    assert SESSION_COOKIE not in set_cookies(answer)


@pytest.mark.parametrize(
    ("trusted", "counted"),
    [
        (["127.0.0.1"], "client:203.0.113.5"),  # the proxy says who the client is
        ([], "client:127.0.0.1"),  # no trusted proxy: anyone could write the header
    ],
)
def test_failed_logins_count_against_the_client_a_trusted_proxy_names(
    make_context, trusted, counted
):
    ctx = make_context(web={"trusted_proxies": trusted})
    users.add_user(ctx, "ada", PASSWORD)
    proxy = TestClient(create_app(ctx), base_url="https://testserver", client=("127.0.0.1", 1))
    proxy.headers["X-Forwarded-For"] = "203.0.113.5"
    log_in(proxy, "ada", "wrong password")
    with ctx.store.atomic() as conn:
        keys = {row.key for row in user_rows.get_failures(conn, [counted, "client:203.0.113.5"])}
    assert keys == {counted}


def test_a_successful_login_gives_the_browser_a_device_cookie_for_the_login_page(ctx):
    answer = log_in(browser(ctx))
    cookie = set_cookies(answer)[DEVICE_COOKIE]
    assert "Path=/login" in cookie and "HttpOnly" in cookie and "Secure" in cookie


@settings(
    max_examples=12,  # each one verifies a real argon2id hash
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.text(max_size=300),
    password=st.text(max_size=2000),
    client=st.text(max_size=300),
    device=st.none() | st.text(max_size=400),
)
@example(name="ada", password="", client="", device="\x80.")  # a cookie not in ASCII
def test_any_login_attempt_is_refused_cleanly(ctx, name, password, client, device):
    result = login.log_in(ctx, name, password, client=client, device_cookie=device)
    assert result.user is None
    with ctx.store.atomic() as conn:
        rows = user_rows.get_failures(conn, [f"client:{client[:100]}"])
    assert all(len(row.key) <= 200 for row in rows)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(fields=st.dictionaries(st.sampled_from(["username", "password", "next", "x"]), st.text()))
def test_any_login_form_gets_a_4xx_never_a_crash(ctx, fields):
    client = browser(ctx)
    page = client.get("/login")
    answer = client.post(
        "/login", data=fields | {"csrf_token": form_token(page.text)}, follow_redirects=False
    )
    assert answer.status_code in (403, 429)
    assert SESSION_COOKIE not in set_cookies(answer)


def test_accounts_are_hashed_with_argon2ids_default_parameters(make_context, monkeypatch):
    monkeypatch.undo()  # the real parameters: RFC 9106's low-memory profile
    ctx = make_context()
    users.add_user(ctx, "ada", PASSWORD)
    with ctx.store.atomic() as conn:
        stored = user_rows.get_user(conn, "ada")
    assert stored is not None and stored.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in stored.password_hash
    assert users.verify_password(ctx, "ADA", PASSWORD) is not None  # names are lowercase


@pytest.mark.both_stores  # the store's queries on SQLite and PostgreSQL
def test_old_failure_counters_are_forgotten_so_guessing_cannot_fill_the_table(ctx, clock):
    for n in range(5):
        attempt(ctx, f"guess{n}", "wrong password", client=f"192.0.2.{n}")
    clock.advance(seconds=(login.FORGET_AFTER + login.MAX_DELAY).total_seconds() + 1)

    attempt(ctx, "another", "wrong password", client="192.0.2.99")

    with ctx.store.atomic() as conn:
        keys = [f"user:guess{n}" for n in range(5)] + ["user:another"]
        assert [row.key for row in user_rows.get_failures(conn, keys)] == ["user:another"]
