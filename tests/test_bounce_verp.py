"""VERP envelope senders: they name one delivery, survive lowercasing, and cannot be forged."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.bounces.verp import (
    MAX_LOCAL_PART_OCTETS,
    read_verp,
    split_bounce_address,
    verp_address,
    verp_key,
)

BOUNCE = "bounces@news.example.org"
KEY = verp_key("verp-test-secret-0123456789")
OTHER_KEY = verp_key("another-secret-0123456789")

digest_ids = st.integers(min_value=0, max_value=10**6)
# Random per-subscriber public ids: URL-safe text like secrets.token_urlsafe makes.
public_ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=22)
EDIT_ALPHABET = string.ascii_letters + string.digits + "+-@._=~"
INSERTED = "a2z70-+@A."  # one of each kind of character is enough for insertions


def test_address_shape_is_compact_lowercase_and_under_the_local_part_limit():
    address = verp_address(BOUNCE, 12345, "Kq3-x_Z9mW2tLp8wRe4sUv", key=KEY)

    local, _, domain = address.rpartition("@")
    assert domain == "news.example.org"
    assert re.fullmatch(r"bounces\+12345-[a-z2-7]+", local)
    assert len(local.encode()) <= MAX_LOCAL_PART_OCTETS


@given(digest_id=digest_ids, subscriber=public_ids)
@settings(max_examples=200, deadline=None)
def test_round_trip(digest_id: int, subscriber: str):
    address = verp_address(BOUNCE, digest_id, subscriber, key=KEY)

    assert read_verp(address, BOUNCE, key=KEY) == (digest_id, subscriber)
    # An MTA that lowercases the whole address changes nothing: the token is lowercase.
    assert read_verp(address.lower(), BOUNCE, key=KEY) == (digest_id, subscriber)
    assert len(address.rpartition("@")[0]) <= MAX_LOCAL_PART_OCTETS


@given(digest_id=st.integers(min_value=0, max_value=10**15 - 1), subscriber=st.text(min_size=1))
@settings(max_examples=200, deadline=None)
def test_any_subscriber_key_round_trips_or_is_refused_as_too_long(digest_id: int, subscriber: str):
    try:
        address = verp_address(BOUNCE, digest_id, subscriber, key=KEY)
    except ValueError as exc:
        assert "octets" in str(exc)
        assert len(subscriber.encode()) > 17  # keys up to 17 octets always fit
        return
    assert address.isascii()
    assert read_verp(address, BOUNCE, key=KEY) == (digest_id, subscriber)


@given(digest_id=digest_ids, subscriber=public_ids, data=st.data())
@settings(max_examples=30, deadline=None)
def test_every_single_character_change_is_rejected(
    digest_id: int, subscriber: str, data: st.DataObject
):
    address = verp_address(BOUNCE, digest_id, subscriber, key=KEY)
    token_start = len("bounces+")
    token_end = address.rindex("@")
    changed = []
    for i, original in enumerate(address):
        changed.append(address[:i] + address[i + 1 :])  # deletion
        changed += [address[:i] + char + address[i:] for char in INSERTED]
        changed += [address[:i] + c + address[i + 1 :] for c in EDIT_ALPHABET if c != original]
    changed.append(address + data.draw(st.sampled_from(EDIT_ALPHABET)))

    for edited in changed:
        decoded = read_verp(edited, BOUNCE, key=KEY)
        same_but_case = edited.lower() == address.lower() and (
            edited[token_start:token_end] == address[token_start:token_end]
        )
        if same_but_case:  # the bounce address's own letters may be case-folded by an MTA
            assert decoded == (digest_id, subscriber), edited
        else:
            assert decoded is None, edited


def test_a_token_made_with_another_key_does_not_match_unless_that_key_is_a_previous_one():
    address = verp_address(BOUNCE, 7, "Zq1", key=OTHER_KEY)

    assert read_verp(address, BOUNCE, key=KEY) is None
    assert read_verp(address, BOUNCE, key=KEY, previous_keys=[OTHER_KEY]) == (7, "Zq1")


def test_the_key_is_derived_per_secret_and_differs_from_the_raw_secret():
    assert verp_key("secret-one-0123456789") != verp_key("secret-two-0123456789")
    assert verp_key("secret-one-0123456789") != b"secret-one-0123456789"


def test_a_token_for_another_bounce_address_does_not_match():
    address = verp_address("bounces@other.example", 7, "Zq1", key=KEY)

    assert read_verp(address, BOUNCE, key=KEY) is None


@given(
    token=st.from_regex(r"[0-9]{1,17}-[a-z2-7]{0,70}", fullmatch=True),
)
@settings(max_examples=200, deadline=None)
def test_well_shaped_guesses_never_match(token: str):
    assert read_verp(f"bounces+{token}@news.example.org", BOUNCE, key=KEY) is None


@given(address=st.text(), bounce_address=st.one_of(st.just(BOUNCE), st.text()))
@settings(max_examples=200, deadline=None)
def test_reading_never_raises_on_arbitrary_input(address: str, bounce_address: str):
    assert read_verp(address, bounce_address, key=KEY) is None


@pytest.mark.parametrize(
    ("bounce_address", "digest_id", "subscriber", "message"),
    [
        ("bounces+x@news.example.org", 1, "k", "without '+'"),
        ("not-an-address", 1, "k", "not an address"),
        ("bouncés@news.example.org", 1, "k", "plain ASCII"),
        (BOUNCE, -1, "k", "out of range"),
        (BOUNCE, 1, "", "must not be empty"),
        ("a-very-long-bounce-mailbox-name-for-returns@news.example.org", 1, "k" * 16, "octets"),
    ],
)
def test_unusable_inputs_are_refused_with_a_reason(
    bounce_address: str, digest_id: int, subscriber: str, message: str
):
    with pytest.raises(ValueError, match=re.escape(message)):
        verp_address(bounce_address, digest_id, subscriber, key=KEY)


def test_split_bounce_address():
    assert split_bounce_address("Bounces@News.Example.org") == ("Bounces", "News.Example.org")
