"""Link tokens: one canonical spelling, no tampering, secret rotation, never a 500.

A token is ``base64url(purpose:subject:issued).base64url(mac)`` (see ``newsletter.signing``);
``sign_body`` below signs any body the way the format says, to try bodies our code would
never make (absurd times, huge ids).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
import warnings
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import app
from newsletter.config import DEFAULT_WEB_SECRET
from newsletter.errors import TokenError
from newsletter.models import SubscriberState
from newsletter.signing import MAX_TOKEN_CHARS, Signer
from newsletter.store import subscribers as rows
from newsletter.subscribers import add_subscriber, remove_subscriber
from newsletter.web import create_app

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

SECRET = "test-secret-0123456789abcdef"  # make_settings' secret
OLD_SECRET = "last-years-secret-0123456789"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
B64URL = string.ascii_letters + string.digits + "-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_body(secret: str, body: bytes) -> str:
    key = hashlib.sha256(b"newsletter-links\0" + secret.encode()).digest()
    return f"{b64(body)}.{b64(hmac.new(key, body, hashlib.sha256).digest()[:16])}"


@pytest.fixture
def ctx(make_context: Callable[..., app.Context]) -> app.Context:
    return make_context()


@pytest.fixture
def client(ctx: app.Context) -> TestClient:
    return TestClient(create_app(ctx))


def single_character_changes(token: str) -> set[str]:
    """Every token one substitution, deletion or insertion away from ``token``."""
    alphabet = B64URL + ".=+/ %~"
    changed = set()
    for i in range(len(token) + 1):
        if i < len(token):
            changed.add(token[:i] + token[i + 1 :])
            changed.update(token[:i] + c + token[i + 1 :] for c in alphabet)
        changed.update(token[:i] + c + token[i:] for c in alphabet)
    changed.discard(token)
    return changed


@pytest.mark.parametrize("purpose", ["unsubscribe", "confirm"])
def test_every_single_character_change_of_a_token_is_refused(ctx, clock, purpose):
    signer = ctx.signer
    token = signer.make(purpose, "sAbCdEfGhIjKlMnOp", now=clock())
    assert signer.read(token, purpose)[0] == "sAbCdEfGhIjKlMnOp"

    accepted = []
    for variant in single_character_changes(token):
        try:
            signer.read(variant, purpose)
        except TokenError:
            continue
        accepted.append(variant)

    assert accepted == []


def test_unused_bits_padding_and_stray_characters_are_refused(ctx, clock):
    token = ctx.signer.make("unsubscribe", "sAbCdEfGhIjKlMnOp", now=clock())
    body, mac = token.split(".")
    raw = base64.urlsafe_b64decode(mac + "==")
    lenient = base64.urlsafe_b64encode(raw).decode()  # padded: decodes to the same bytes
    last = B64URL.index(mac[-1])
    same_bytes = mac[:-1] + B64URL[last ^ 1]  # flips one of the 4 unused low bits
    assert base64.urlsafe_b64decode(same_bytes + "==") == raw

    for variant in (f"{body}.{lenient}", f"{body}.{same_bytes}", f"{body}.{mac}\n", f" {token}"):
        with pytest.raises(TokenError):
            ctx.signer.read(variant, "unsubscribe")


def test_a_replayed_confirm_link_in_another_spelling_cannot_reactivate(ctx, client, clock):
    pending = add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    token = ctx.confirm_url(pending.public_id).rsplit("/", 1)[1]
    assert client.post(f"/confirm/{token}").status_code == 200
    remove_subscriber(ctx.store, "new@example.org", now=clock())
    add_subscriber(ctx.store, "new@example.org", now=clock(), double_opt_in=True)
    body, mac = token.split(".")
    respelled = f"{body}.{mac[:-1]}{B64URL[B64URL.index(mac[-1]) ^ 1]}"

    assert client.post(f"/confirm/{respelled}").status_code == 400
    assert client.post(f"/confirm/{token}").status_code == 200  # "already used" page
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, "new@example.org")
    assert found is not None and found.state is SubscriberState.PENDING


@pytest.mark.parametrize(
    "body",
    [
        b"unsubscribe:sAbCdEfGhIjKlMnOp:99999999999999999999",  # the year 3 billion
        b"unsubscribe:sAbCdEfGhIjKlMnOp:-1",
        b"unsubscribe:sAbCdEfGhIjKlMnOp:1e9",
        b"unsubscribe:sAbCdEfGhIjKlMnOp:0017",
        b"unsubscribe:sAbCdEfGhIjKlMnOp:",
        b"unsubscribe:99999999999999999999999999999999:1795168800",  # beyond any row id
        b"unsubscribe:9223372036854775808:1795168800",  # 2**63
        b"unsubscribe:2147483648:1795168800",  # 2**31: no first-release row had it
        b"unsubscribe:0:1795168800",
        b"unsubscribe:007:1795168800",
        b"unsubscribe:-5:1795168800",
        b"unsubscribe::1795168800",
        b"unsubscribe:a:b:1795168800",
        b"unsubscribe:s\xc3\xa9t\xc3\xa9:1795168800",
        b"unsubscribe:s\x00:1795168800",
        b"\xff\xfe",
        b"",
        b"unsubscribe:" + b"s" * 5000 + b":1795168800",
    ],
)
def test_absurd_signed_bodies_are_400_never_500(ctx, client, clock, body):
    add_subscriber(ctx.store, "ada@example.org", now=clock())
    token = sign_body(SECRET, body)

    responses = [
        client.get(f"/unsubscribe/{token}"),
        client.post(f"/unsubscribe/{token}", data=ONE_CLICK),
        client.post(f"/confirm/{token}"),
    ]

    assert [r.status_code for r in responses] == [400, 400, 400]
    with ctx.store.atomic() as conn:
        assert rows.count_by_state(conn) == {"active": 1}


def test_an_overlong_token_is_refused_unread(ctx, client):
    token = "A" * (MAX_TOKEN_CHARS + 1) + "." + "A" * 22
    assert client.get(f"/unsubscribe/{token}").status_code == 400
    with pytest.raises(TokenError, match="malformed"):
        ctx.signer.read(token, "unsubscribe")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    token=st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=400).filter(
            lambda t: t not in {".", ".."}
        ),
        st.text(B64URL + ".", min_size=1, max_size=120),
        st.builds(
            lambda a, b: f"{a}.{b}",
            st.text(B64URL, min_size=1, max_size=60),
            st.text(B64URL, max_size=30),
        ),
    )
)
def test_any_token_string_is_400_and_changes_nothing(ctx, client, clock, token):
    """Never a 500, never a change: whatever arrives in the URL."""
    path = quote(token, safe="")
    with ctx.store.atomic() as conn:
        if rows.get_by_email(conn, "ada@example.org") is None:
            rows.insert_many(
                conn, [("ada@example.org", "Ada", {})], state=SubscriberState.ACTIVE, now=clock()
            )

    for response in (
        client.get(f"/unsubscribe/{path}"),
        client.post(f"/unsubscribe/{path}", data=ONE_CLICK),
        client.get(f"/confirm/{path}"),
        client.post(f"/confirm/{path}"),
    ):
        assert response.status_code in (400, 404, 405), (token, response.status_code)

    with ctx.store.atomic() as conn:
        assert rows.count_by_state(conn) == {"active": 1}


# --- rotation ----------------------------------------------------------------------------


def test_links_signed_with_a_previous_secret_still_work_and_new_ones_use_the_new_one(
    make_context, clock
):
    before = make_context(web={"secret": OLD_SECRET})
    ada = add_subscriber(before.store, "ada@example.org", now=clock())
    bob = add_subscriber(before.store, "bob@example.org", now=clock(), double_opt_in=True)
    old_unsubscribe = before.unsubscribe_url(ada.public_id).rsplit("/", 1)[1]
    old_confirm = before.confirm_url(bob.public_id).rsplit("/", 1)[1]

    rotated = make_context(web={"secret": SECRET, "previous_secrets": [OLD_SECRET]})
    forgotten = make_context(web={"secret": SECRET})
    new_link = rotated.unsubscribe_url(ada.public_id).rsplit("/", 1)[1]

    assert rotated.signer.read(old_unsubscribe, "unsubscribe")[0] == ada.public_id
    assert rotated.signer.read(old_confirm, "confirm")[0] == bob.public_id
    assert Signer(SECRET).read(new_link, "unsubscribe")[0] == ada.public_id  # signed with new
    with pytest.raises(TokenError):
        Signer(OLD_SECRET).read(new_link, "unsubscribe")
    with pytest.raises(TokenError):
        forgotten.signer.read(old_unsubscribe, "unsubscribe")

    client = TestClient(create_app(rotated))
    assert client.post(f"/unsubscribe/{old_unsubscribe}", data=ONE_CLICK).text == "unsubscribed"
    assert "You're subscribed" in client.post(f"/confirm/{old_confirm}").text


def test_the_default_secret_as_a_previous_one_reads_unsubscribe_links_only(make_context, clock):
    """Mail sent with the default secret keeps its unsubscribe links after a real secret is
    set; a confirmation (consent) can never be forged with the published secret."""
    before = make_context(web={"secret": DEFAULT_WEB_SECRET, "base_url": "http://127.0.0.1"})
    ada = add_subscriber(before.store, "ada@example.org", now=clock())
    bob = add_subscriber(before.store, "bob@example.org", now=clock(), double_opt_in=True)
    unsubscribe = before.unsubscribe_url(ada.public_id).rsplit("/", 1)[1]
    confirm = before.confirm_url(bob.public_id).rsplit("/", 1)[1]

    after = make_context(web={"secret": SECRET, "previous_secrets": [DEFAULT_WEB_SECRET]})
    client = TestClient(create_app(after))

    assert client.post(f"/unsubscribe/{unsubscribe}", data=ONE_CLICK).text == "unsubscribed"
    assert client.post(f"/confirm/{confirm}").status_code == 400
    with after.store.atomic() as conn:
        assert rows.states_of(conn, ["ada@example.org", "bob@example.org"]) == {
            "ada@example.org": "unsubscribed",
            "bob@example.org": "pending",
        }


# --- never a wrong person ----------------------------------------------------------------

PEOPLE = ("ada@example.org", "bob@example.org", "cy@example.org")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    who=st.integers(0, len(PEOPLE) - 1),
    change=st.one_of(
        st.none(), st.tuples(st.integers(0, 200), st.sampled_from(B64URL + ".=")), st.just("cut")
    ),
)
def test_a_link_names_its_own_subscriber_or_nobody(ctx, client, clock, who, change):
    with ctx.store.atomic() as conn:
        if rows.get_by_email(conn, PEOPLE[0]) is None:
            rows.insert_many(
                conn, [(e, "", {}) for e in PEOPLE], state=SubscriberState.ACTIVE, now=clock()
            )
        people = rows.get_many_by_email(conn, list(PEOPLE))
        for person in people:  # every example starts with everyone subscribed
            rows.set_state(conn, person.id, SubscriberState.ACTIVE, now=clock())
    token = ctx.unsubscribe_url(people[who].public_id).rsplit("/", 1)[1]
    if change == "cut":
        token = token[: len(token) // 2]
    elif change is not None:
        at, char = change
        at %= len(token)
        token = token[:at] + char + token[at + 1 :]

    response = client.post(f"/unsubscribe/{token}", data=ONE_CLICK)

    with ctx.store.atomic() as conn:
        left = {e for e, s in rows.states_of(conn, list(PEOPLE)).items() if s != "active"}
    if response.status_code == 200:
        assert left == {people[who].email}
    else:
        assert response.status_code == 400 and left == set()
