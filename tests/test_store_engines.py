"""What differs between SQLite and PostgreSQL must not show: lengths, NUL, times, row counts,
and the claims that two processes race for (locks, slots, outbox rows).

Every test here runs on both engines (``both_stores``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select, text

from newsletter import app
from newsletter.errors import StoreError
from newsletter.models import Article, DeliveryState, RenderedDigest, SubscriberState
from newsletter.store import Store, feeds, locks, outbox, slots
from newsletter.store import articles as article_rows
from newsletter.store import digests as digest_rows
from newsletter.store import subscribers as subscriber_rows
from newsletter.store.schema import articles, deliveries
from tests.conftest import FrozenClock
from tests.longest_values import EMAIL, NAME
from tests.smtp_servers import SmtpTestServer

pytestmark = pytest.mark.both_stores

NOW = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


@pytest.fixture
def rolled_back(store: Store) -> Callable[[Callable[[Connection], Any]], Any]:
    """Run a check in a transaction that is rolled back: each Hypothesis example starts clean."""

    def run(check: Callable[[Connection], Any]) -> Any:
        with store.engine.connect() as conn:
            conn.begin()
            try:
                return check(conn)
            finally:
                conn.rollback()

    return run


def article(key: str, *, url: str | None = None, title: str = "T", origin: str = "") -> Article:
    return Article(
        key=key, title=title, published=NOW, summary="", url=url, origin=origin, paragraphs=("p",)
    )


def add_active(conn: Connection, emails: list[str]) -> None:
    subscriber_rows.insert_many(
        conn, [(e, "", {}) for e in emails], state=SubscriberState.ACTIVE, now=NOW
    )


def new_digest(conn: Connection) -> int:
    digest_id = conn.execute(
        digest_rows.digests.insert().values(
            subject="s",
            preheader="",
            html="h",
            text="t",
            token_nonce="n",
            state="sending",
            created_at=NOW,
        )
    ).inserted_primary_key
    assert digest_id is not None
    return int(digest_id[0])


def test_the_send_log_counts_the_real_recipients(
    make_context: Callable[..., app.Context], caplog: pytest.LogCaptureFixture
):
    """PostgreSQL's driver reported -1 rows for the outbox insert: "for -1 subscribers"."""
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        with ctx.store.atomic() as conn:
            add_active(conn, ["a@example.org", "b@example.org", "c@example.org"])
            subscriber_rows.insert_many(
                conn, [("d@example.org", "", {})], state=SubscriberState.PENDING, now=NOW
            )
        with caplog.at_level(logging.INFO, logger="newsletter.app.send"):
            summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.counts == {"sent": 3}
    assert f"digest {summary.digest_id}: {summary.articles} articles for 3 subscribers" in (
        caplog.messages
    )


def test_a_database_error_on_a_kept_connection_names_the_database(store: Store):
    # The delivery engine keeps one connection open between its transactions. PostgreSQL
    # ends this session (a lost connection); SQLite knows no such function: both are
    # OperationalErrors.
    lose = text("SELECT pg_terminate_backend(pg_backend_pid())")
    with (
        store.engine.connect() as conn,
        pytest.raises(StoreError) as caught,
        store.atomic_on(conn) as same,
    ):
        same.execute(lose)
    assert str(caught.value).startswith(f"database {store.where}: ")


def test_create_outbox_returns_the_rows_it_made(store: Store):
    with store.atomic() as conn:
        add_active(conn, [f"r{i}@example.org" for i in range(7)])
        first, second = new_digest(conn), new_digest(conn)
        assert outbox.create_outbox(conn, first, now=NOW) == 7
        assert outbox.create_outbox(conn, second, now=NOW) == 7


def test_values_of_any_length_we_write_are_kept_whole(store: Store):
    url = "https://example.org/" + "a" * 10_000
    message_id = "<1.1.salt@" + "d" * 1000 + ".example>"
    owner = "host-" + "h" * 500 + ":123:abcd"
    with store.atomic() as conn:
        digest_rows.remember_articles(conn, [article("url:" + url[:500], url=url)], now=NOW)
        add_active(conn, [EMAIL])
        assert subscriber_rows.get_by_email(conn, EMAIL) is not None
        digest_id = new_digest(conn)
        outbox.create_outbox(conn, digest_id, now=NOW)
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars()
        lease = NOW + timedelta(minutes=1)
        outbox.claim(conn, [delivery_id], now=NOW, owner=owner, lease_until=lease)
        outbox.record(
            conn,
            [outbox.Outcome(delivery_id, DeliveryState.SENT, 1, message_id=message_id)],
            now=NOW,
            owner=owner,
        )
        assert locks.try_acquire(conn, "send", owner, now=NOW, ttl=timedelta(minutes=1)) is None
        assert slots.claim(conn, "2026-11-26T07:00:00+00:00", owner, now=NOW) is None
    with store.atomic() as conn:
        assert conn.execute(select(articles.c.url)).scalar_one() == url
        assert conn.execute(select(deliveries.c.message_id)).scalar_one() == message_id
        assert slots.get(conn, "2026-11-26T07:00:00+00:00").owner == owner  # type: ignore[union-attr]


def test_a_name_of_the_longest_kind_fits(store: Store):
    wide = "𝔸" * len(NAME)  # 4 bytes each in UTF-8: the column counts characters
    with store.atomic() as conn:
        subscriber_rows.insert_many(
            conn,
            [("wide@example.org", wide, {"city": "é" * 200})],
            state=SubscriberState.ACTIVE,
            now=NOW,
        )
        found = subscriber_rows.get_by_email(conn, "wide@example.org")
    assert found is not None and found.name == wide and found.attrs == {"city": "é" * 200}


def test_feed_validators_are_kept_up_to_the_key_length_and_skipped_beyond(store: Store):
    fits = "https://example.org/" + "é" * 990  # 2000 bytes
    too_long = fits + "x"
    with store.atomic() as conn:
        feeds.save_validators(conn, fits, etag='"a"', last_modified=None, now=NOW)
        feeds.save_validators(conn, too_long, etag='"b"', last_modified=None, now=NOW)
        assert feeds.load_validators(conn) == {fits: ('"a"', None)}


def test_times_come_back_as_the_same_instant_in_utc(store: Store):
    paris = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 26, 8, 30, 15, 123456, tzinfo=paris)
    with store.atomic() as conn:
        assert slots.claim(conn, "slot", "me", now=local) is None
    with store.atomic() as conn:
        started = slots.get(conn, "slot").started_at  # type: ignore[union-attr]
    assert started == local and started.tzinfo == UTC
    with pytest.raises(Exception, match="naive datetime"), store.atomic() as conn:
        slots.claim(conn, "other", "me", now=datetime(2026, 11, 26, 7, 0))


# Any text, and often a NUL in it (PostgreSQL refuses NUL in text; SQLite keeps it).
texts = st.text(max_size=60) | st.builds(
    lambda a, b: a + "\x00" + b, st.text(max_size=30), st.text(max_size=30)
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=texts.filter(bool), url=st.none() | texts, title=texts, origin=texts)
def test_any_article_text_is_stored_and_found_again(rolled_back, key, url, title, origin):
    """The article comes back as it went in, is known by its key and goes into a digest."""
    given_article = article(key, url=url, title=title, origin=origin)

    def check(conn: Connection) -> None:
        assert digest_rows.remember_articles(conn, [given_article], now=NOW) == 1
        assert digest_rows.known_keys(conn, [key]) == {key}
        assert digest_rows.remember_articles(conn, [given_article], now=NOW) == 0
        found = digest_rows.uncarried_articles(conn, published_since=NOW - timedelta(days=1))
        assert found == [given_article]
        rendered = RenderedDigest(
            subject=title, preheader="", html=title, text=title, article_keys=(key,)
        )
        digest_id = digest_rows.create_digest(conn, rendered, token_nonce="n", slot=None, now=NOW)
        assert article_rows.carrying_digests(conn, [key]) == {key: digest_id}

    rolled_back(check)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(error=texts, reason=texts)
def test_any_smtp_reply_text_is_recorded(rolled_back, error, reason):
    def check(conn: Connection) -> None:
        add_active(conn, ["a@example.org"])
        digest_id = new_digest(conn)
        outbox.create_outbox(conn, digest_id, now=NOW)
        [delivery_id] = conn.execute(select(deliveries.c.id)).scalars()
        lease = NOW + timedelta(minutes=1)
        outbox.claim(conn, [delivery_id], now=NOW, owner="me", lease_until=lease)
        outbox.record(
            conn,
            [outbox.Outcome(delivery_id, DeliveryState.FAILED, 1, error=error)],
            now=NOW,
            owner="me",
        )
        slots.claim(conn, "s", "me", now=NOW)
        slots.finish(conn, "s", "me", outcome=reason, done=True, now=NOW)
        stored = conn.execute(select(deliveries.c.last_error)).scalar_one()
        assert stored == error.replace("\x00", "")  # as the message stage would show it
        assert slots.get(conn, "s").outcome == reason.replace("\x00", "")  # type: ignore[union-attr]

    rolled_back(check)


def _race(store: Store, contenders: int, attempt: Callable[[Connection, int], Any]) -> list[Any]:
    """``attempt`` from ``contenders`` connections at the same moment, each in its own
    transaction; their results in contender order."""
    ready = threading.Barrier(contenders, timeout=30)
    results: list[Any] = [None] * contenders
    problems: list[BaseException] = []

    def contend(index: int) -> None:
        try:
            with store.atomic() as conn:
                ready.wait()
                results[index] = attempt(conn, index)
        except BaseException as exc:  # reported below
            problems.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert problems == []
    return results


def test_one_of_several_processes_racing_for_the_send_lock_gets_it(store: Store):
    results = _race(
        store,
        4,
        lambda conn, i: locks.try_acquire(
            conn, "send", f"elsewhere:{i}", now=NOW, ttl=timedelta(minutes=5)
        ),
    )

    assert results.count(None) == 1
    with store.atomic() as conn:
        holder = conn.execute(select(locks.locks.c.owner)).scalar_one()
    assert holder == f"elsewhere:{results.index(None)}"


def test_one_of_several_processes_taking_over_an_expired_lock_gets_it(store: Store):
    with store.atomic() as conn:
        locks.try_acquire(conn, "send", "gone:1", now=NOW, ttl=timedelta(minutes=1))
    later = NOW + timedelta(minutes=5)

    results = _race(
        store,
        4,
        lambda conn, i: locks.try_acquire(
            conn, "send", f"elsewhere:{i}", now=later, ttl=timedelta(minutes=5)
        ),
    )

    assert results.count(None) == 1


def test_one_of_several_processes_racing_for_a_slot_runs_it(store: Store):
    results = _race(
        store, 4, lambda conn, i: slots.claim(conn, "2026-11-26T07:00", f"elsewhere:{i}", now=NOW)
    )

    assert results.count(None) == 1


def test_racing_outbox_claims_share_the_rows_without_overlap(store: Store):
    with store.atomic() as conn:
        add_active(conn, [f"r{i}@example.org" for i in range(200)])
        digest_id = new_digest(conn)
        outbox.create_outbox(conn, digest_id, now=NOW)
        ids = list(conn.execute(select(deliveries.c.id).order_by(deliveries.c.id)).scalars())

    claimed: list[set[int]] = _race(
        store,
        4,
        lambda conn, i: outbox.claim(
            conn, ids, now=NOW, owner=f"elsewhere:{i}", lease_until=NOW + timedelta(minutes=1)
        ),
    )

    assert sum(len(c) for c in claimed) == len(ids)
    assert set().union(*claimed) == set(ids)
    with store.atomic() as conn:
        assert outbox.counts(conn, digest_id) == {"sending": len(ids)}


def test_a_frozen_clock_runs_the_whole_send_on_both_engines(
    make_context: Callable[..., app.Context], clock: FrozenClock
):
    """Retry times, lock leases and digest dates compare the same way on both engines."""
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port})
        with ctx.store.atomic() as conn:
            add_active(conn, ["a@example.org"])
        first = app.send_now(ctx)
        clock.advance(days=1)
        second = app.send_now(ctx)

    assert first.report is not None and first.report.counts == {"sent": 1}
    assert second.digest_id is None  # nothing new: the same articles never go out twice
    with ctx.store.atomic() as conn:
        [stored] = digest_rows.recent_digests(conn)
    assert stored.created_at == clock.now - timedelta(days=1)
    assert stored.finished_at == clock.now - timedelta(days=1)


def test_keys_that_differ_only_by_a_nul_are_one_article(store: Store):
    with store.atomic() as conn:
        kept = digest_rows.remember_articles(
            conn, [article("url:https://x.org/a\x00b"), article("url:https://x.org/ab")], now=NOW
        )
        assert kept == 1
        assert digest_rows.known_keys(
            conn, ["url:https://x.org/ab", "url:https://x.org/a\x00b"]
        ) == {
            "url:https://x.org/ab",
            "url:https://x.org/a\x00b",
        }
