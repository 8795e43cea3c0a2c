"""Logging in to the admin pages as a browser does: the form's token, then the POST."""

from __future__ import annotations

import re
import warnings
from typing import Any, Protocol

import pytest
from argon2 import PasswordHasher

from newsletter.app import Context, users
from newsletter.web import create_app

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

PASSWORD = "correct horse battery staple"
# argon2id as in production, with less memory and time: the default costs ~0.25 s a hash here,
# and most tests hash twice (the account, the login). Tests that check the real parameters
# do not use it.
CHEAP_ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> PasswordHasher:
    """Hash with ``CHEAP_ARGON2`` (still argon2id) during the test."""
    monkeypatch.setattr(users, "password_hasher", lambda: CHEAP_ARGON2)
    return CHEAP_ARGON2


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class _Response(Protocol):
    status_code: int
    text: str


class _Client(Protocol):
    """Starlette's TestClient and httpx.Client alike (both keep cookies)."""

    def get(self, url: str, **kwargs: object) -> _Response: ...

    def post(self, url: str, **kwargs: object) -> _Response: ...


def form_token(page: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _TOKEN.search(page)
    assert found is not None, "no csrf_token field on the page"
    return found.group(1)


def log_in(client: _Client, name: str = "ada", password: str = PASSWORD) -> _Response:
    """GET the login form, POST it back; the answer (303 on success) without following it."""
    form = client.get("/login")
    assert form.status_code == 200
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": form_token(form.text)},
        follow_redirects=False,
    )


def operator_client(ctx: Context, name: str = "ada", **app_options: Any) -> TestClient:
    """A TestClient on ``create_app(ctx)``, logged in as a new account ``name``.

    Over https, as a browser behind the TLS proxy: with an https ``base_url`` the cookies are
    ``Secure`` and would not be sent back over http.
    """
    users.add_user(ctx, name, PASSWORD)
    client = TestClient(create_app(ctx, **app_options), base_url="https://testserver")
    answer = log_in(client, name)
    assert answer.status_code == 303, answer.text
    return client
