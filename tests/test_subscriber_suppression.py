"""The suppression list and erasure (issue #14, the subscriber side): bounced, complaining and
forgotten addresses are kept as keyed hashes that add and import respect; ``forget`` leaves
nothing else behind, ``show`` prints everything stored about one person."""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, String, Text, select

from newsletter import app
from newsletter.app import confirmations, links, subscriber_list, subscriptions
from newsletter.config import DEFAULT_WEB_SECRET
from newsletter.errors import SubscriberError
from newsletter.models import Subscriber, SubscriberState
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.subscribers import add_subscriber, import_csv, lifecycle
from newsletter.subscribers.suppression import Reason, SuppressionList
from tests.conftest import Run
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

BASE = "https://news.example.org"
TODAY = "2026-11-26"  # the frozen clock's day


@pytest.fixture
def ctx(make_context: Callable[..., app.Context], smtp_server: SmtpTestServer) -> app.Context:
    return make_context(smtp={"port": smtp_server.port})


def subscriber(ctx: app.Context, email: str) -> Subscriber | None:
    with ctx.store.atomic() as conn:
        return rows.get_by_email(conn, email)


def import_one(ctx: app.Context, tmp_path: Path, email: str, **options: bool) -> list[str]:
    source = tmp_path / "again.csv"
    source.write_text(f"email,name\n{email},Someone\n", encoding="utf-8")
    report = import_csv(
        ctx.store, source, now=ctx.clock(), suppressions=ctx.suppressions, **options
    )
    return [reason for _, reason in report.rejected]


def complain(ctx: app.Context, email: str) -> bool:
    found = subscriber(ctx, email)
    assert found is not None
    with ctx.store.atomic() as conn:
        return lifecycle.mark_complained(
            conn, found.id, now=ctx.clock(), suppressions=ctx.suppressions
        )


def bounce(ctx: app.Context, email: str, reason: str = "550 5.1.1 no such user") -> bool:
    found = subscriber(ctx, email)
    assert found is not None
    with ctx.store.atomic() as conn:
        return lifecycle.mark_bounced(
            conn, found.id, reason, now=ctx.clock(), suppressions=ctx.suppressions
        )


def confirm_token(ctx: app.Context, smtp_server: SmtpTestServer) -> str:
    part = smtp_server.received[-1].parse().get_body(("plain",))
    assert part is not None
    found = re.search(re.escape(BASE) + r"/confirm/(\S+)", part.get_content())
    assert found is not None
    return found.group(1)


# --- bounces and complaints ------------------------------------------------------------


def test_a_hard_bounce_on_a_digest_marks_bounced_with_the_reply_and_suppresses(make_context):
    def unknown(address: str, attempt: int) -> str | None:
        return "550 5.1.1 <gone@example.org>: no such user" if address.startswith("gone") else None

    with SmtpTestServer(RecordingHandler(rcpt_reply=unknown)) as server:
        ctx = make_context(smtp={"port": server.port})
        for email in ("gone@example.org", "ada@example.org"):
            add_subscriber(ctx.store, email, now=ctx.clock())

        app.send_now(ctx)

    gone = subscriber(ctx, "gone@example.org")
    assert gone is not None and gone.state is SubscriberState.BOUNCED
    with ctx.store.atomic() as conn:
        row = rows.row_by_email(conn, "gone@example.org")
        entry = ctx.suppressions.find(conn, "gone@example.org")
        assert ctx.suppressions.find(conn, "ada@example.org") is None
    assert row is not None and row.state_reason == "550 5.1.1 <gone@example.org>: no such user"
    assert entry is not None and entry.describe() == f"suppressed: bounced on {TODAY}"


def test_a_complaint_unsubscribes_with_its_reason_and_add_and_import_refuse_the_address(
    ctx, tmp_path, clock
):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())

    assert complain(ctx, "ada@example.org") is True
    assert complain(ctx, "ada@example.org") is False  # a second report changes nothing more

    with ctx.store.atomic() as conn:
        row = rows.row_by_email(conn, "ada@example.org")
    assert row is not None and (row.state, row.state_reason) == ("unsubscribed", "complaint")
    refused = f"ada@example.org is suppressed: complained on {TODAY}"
    assert import_one(ctx, tmp_path, "ADA@example.org") == [refused]
    assert import_one(ctx, tmp_path, "ada@example.org", double_opt_in=True) == [refused]
    for double_opt_in in (False, True):
        with pytest.raises(SubscriberError, match=re.escape(refused) + "; only the person"):
            subscriptions.add(ctx, "ada@example.org", double_opt_in=double_opt_in)


def test_only_the_persons_own_sign_up_and_confirmation_lift_a_suppression(
    ctx, client_factory, smtp_server, tmp_path
):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=ctx.clock())
    complain(ctx, "ada@example.org")

    client = client_factory(ctx)
    assert client.post("/api/subscribe", json={"email": "ada@example.org"}).status_code == 202
    confirmations.deliver_confirmations(ctx)
    with ctx.store.atomic() as conn:  # still suppressed while it is only a request
        assert ctx.suppressions.find(conn, "ada@example.org") is not None
    links.confirm(ctx, confirm_token(ctx, smtp_server))

    ada = subscriber(ctx, "ada@example.org")
    assert ada is not None and ada.state is SubscriberState.ACTIVE
    with ctx.store.atomic() as conn:
        assert ctx.suppressions.find(conn, "ada@example.org") is None
        row = rows.row_by_email(conn, "ada@example.org")
    assert row is not None and row.state_reason is None
    assert import_one(ctx, tmp_path, "ada@example.org") == [
        "ada@example.org is already on the list (active)"
    ]


def test_a_bounced_address_comes_back_only_through_a_confirmation_email(ctx, smtp_server, tmp_path):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=ctx.clock())
    assert bounce(ctx, "ada@example.org") is True
    assert bounce(ctx, "ada@example.org") is False

    with pytest.raises(SubscriberError, match=r"suppressed: bounced on .*--double-opt-in"):
        subscriptions.add(ctx, "ada@example.org")
    added = subscriptions.add(ctx, "ada@example.org", double_opt_in=True)  # checks the address
    assert added.subscriber.state is SubscriberState.PENDING
    links.confirm(ctx, confirm_token(ctx, smtp_server))

    with ctx.store.atomic() as conn:
        assert ctx.suppressions.find(conn, "ada@example.org") is None


def test_a_stronger_reason_is_never_replaced_by_a_weaker_one(ctx, clock):
    add_subscriber(ctx.store, "ada@example.org", now=clock())
    complain(ctx, "ada@example.org")
    clock.advance(days=3)
    bounce(ctx, "ada@example.org")  # a late bounce of an earlier digest

    with ctx.store.atomic() as conn:
        entry = ctx.suppressions.find(conn, "ada@example.org")
    assert entry is not None and entry.describe() == f"suppressed: complained on {TODAY}"


# --- the key ---------------------------------------------------------------------------


def test_the_list_survives_a_secret_rotation(make_context, clock):
    before = make_context(web={"secret": "the-first-secret-0123456789"})
    add_subscriber(before.store, "ada@example.org", now=clock())
    complain(before, "ada@example.org")

    rotated = make_context(
        web={
            "secret": "the-second-secret-0123456789",
            "previous_secrets": ["the-first-secret-0123456789"],
        }
    )
    forgot_the_old = make_context(web={"secret": "the-second-secret-0123456789"})

    with rotated.store.atomic() as conn:
        assert rotated.suppressions.find(conn, "ada@example.org") is not None
        assert forgot_the_old.suppressions.find(conn, "ada@example.org") is None


def test_entries_made_with_the_built_in_secret_still_count_after_setting_a_real_one(
    make_context, clock
):
    demo = make_context(web={"secret": DEFAULT_WEB_SECRET, "base_url": "http://127.0.0.1:8000"})
    with demo.store.atomic() as conn:
        demo.suppressions.add(conn, "ada@example.org", Reason.FORGOTTEN, now=clock())

    real = make_context(web={"secret": "a-real-secret-0123456789"})
    with real.store.atomic() as conn:
        assert real.suppressions.find(conn, "ada@example.org") is not None


@settings(max_examples=50, deadline=None)
@given(
    addresses=st.lists(st.emails(), min_size=2, max_size=4, unique=True),
    secret=st.text(min_size=16, max_size=40),
)
def test_a_suppressed_address_is_found_and_no_other(addresses: list[str], secret: str):
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(f"sqlite:///{folder}/s.db")
        listed = SuppressionList(secret)
        now = datetime(2026, 11, 26, tzinfo=UTC)
        with store.atomic() as conn:
            listed.add(conn, addresses[0], Reason.BOUNCED, now=now)
            found = listed.find_many(conn, addresses)
        store.close()
    assert set(found) == {addresses[0]}
    assert re.fullmatch(r"[0-9a-f]{64}", listed.address_hash(addresses[0]))


# --- erasure and access ----------------------------------------------------------------


def texts_holding(ctx: app.Context, *needles: str) -> list[tuple[str, str]]:
    """``(table, column)`` of every text value in the database that holds one of
    ``needles`` (any case)."""
    metadata = MetaData()
    found = []
    with ctx.store.atomic() as conn:
        metadata.reflect(conn)
        for table in metadata.tables.values():
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            for row in conn.execute(select(*columns)) if columns else []:
                for column, value in zip(columns, row, strict=True):
                    if value and any(n.lower() in str(value).lower() for n in needles):
                        found.append((table.name, column.name))
    return found


def test_forget_leaves_nothing_but_the_hash_and_nothing_brings_it_back(
    make_context, tmp_path, clock
):
    def policy(address: str, attempt: int) -> str | None:  # a reply quoting the address
        return f"550 5.7.1 <{address}> refused by policy" if attempt == 1 else None

    with SmtpTestServer(RecordingHandler(rcpt_reply=policy)) as server:
        ctx = make_context(smtp={"port": server.port})
        source = tmp_path / "list.csv"
        source.write_text(
            "email,name,city\nada.lovelace@example.org,Ada Lovelace,Marylebone\n"
            "bob@example.org,Bob,Leeds\n",
            encoding="utf-8",
        )
        import_csv(ctx.store, source, now=clock())
        app.send_now(ctx)  # refused: a failed delivery quoting the address
        subscriptions.record_signup(ctx, "Ada.Lovelace@example.org", "Ada L")  # queued
        assert texts_holding(ctx, "ada.lovelace@example.org")  # it is there, several times

        gone = subscriber_list.forget_person(ctx, "ADA.lovelace@example.org")

        assert (gone.was_listed, gone.deliveries, gone.requests) == (True, 1, 1)
        assert texts_holding(ctx, "ada.lovelace@example.org", "Lovelace", "Marylebone") == []
        assert texts_holding(ctx, "bob@example.org") != []  # nobody else was touched
        refused = f"ada.lovelace@example.org is suppressed: forgotten on {TODAY}"
        assert import_one(ctx, tmp_path, "ada.lovelace@example.org") == [refused]
        with pytest.raises(SubscriberError, match=re.escape(refused)):
            subscriptions.add(ctx, "ada.lovelace@example.org", double_opt_in=True)
        assert texts_holding(ctx, "ada.lovelace@example.org") == []


def test_show_prints_everything_stored_about_one_person_as_json(run: Run, env: Path, smtp_server):
    source = env / "list.csv"
    source.write_text("email,name,city\nada@example.org,Ada,London\n", encoding="utf-8")
    run("subscribers", "import", str(source))
    run("send-now")

    code, out, _ = run("subscribers", "show", "ADA@example.org", "--json")

    assert code == 0
    shown = json.loads(out)
    assert shown["email"] == "ada@example.org"
    person = shown["subscriber"]
    assert (person["name"], person["state"], person["attrs"]) == (
        "Ada",
        "active",
        {"city": "London"},
    )
    assert {"created_at", "confirmed_at", "public_id", "legacy_id", "state_reason"} <= set(person)
    [delivery] = shown["deliveries"]
    assert (delivery["kind"], delivery["state"]) == ("digest", "sent")
    assert delivery["message_id"] == smtp_server.received[0].parse()["Message-ID"]
    assert shown["signup_requests"] == [] and shown["suppressed"] is None
    code, out, _ = run("subscribers", "show", "ada@example.org")
    assert code == 0 and "city" in out and "delivery: digest" in out


def test_forget_from_the_command_line_asks_first_then_says_what_it_deleted(
    run: Run, env: Path, smtp_server, monkeypatch: pytest.MonkeyPatch
):
    run("subscribers", "add", "ada@example.org", "--name", "Ada")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))

    code, _, err = run("subscribers", "forget", "ada@example.org")  # "n": nothing done
    assert code != 0 and "aborted" in err
    assert run("subscribers", "list")[1] == "ada@example.org\tactive\tAda\n"

    code, out, _ = run("subscribers", "forget", "ada@example.org", "--yes")

    assert code == 0
    assert out == (
        "forgot ada@example.org: deleted the subscriber, 0 delivery rows and 0 sign-up "
        "requests; kept a keyed hash so no import adds it back\n"
    )
    shown = json.loads(run("subscribers", "show", "ada@example.org", "--json")[1])
    assert shown["subscriber"] is None and shown["deliveries"] == []
    assert shown["suppressed"]["reason"] == "forgotten"
    code, _, err = run("subscribers", "add", "ada@example.org")
    assert code == 1 and "suppressed: forgotten on" in err
    code, out, _ = run("subscribers", "forget", "zoe@example.org", "--yes")
    assert out.startswith("zoe@example.org was not on the list; it is now suppressed")


@pytest.fixture
def client_factory() -> Callable[[app.Context], object]:
    import warnings

    with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
        warnings.simplefilter("ignore", UserWarning)
        from starlette.testclient import TestClient

    from newsletter.web import create_app

    return lambda ctx: TestClient(create_app(ctx))
