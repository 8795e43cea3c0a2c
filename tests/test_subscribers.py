"""The subscriber lifecycle: states, validation, import/export, double opt-in by email."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter import app
from newsletter.app import links, subscriptions
from newsletter.app.links import Outcome
from newsletter.errors import DeliveryError, SubscriberError, UsageError
from newsletter.inbox import free_port
from newsletter.models import SubscriberState
from newsletter.store import Store
from newsletter.store import subscribers as rows
from newsletter.store.schema import subscribers
from newsletter.subscribers import (
    add_subscriber,
    export_csv,
    import_csv,
    list_subscribers,
    normalize_address,
    remove_subscriber,
)
from newsletter.subscribers.addresses import clean_attr, clean_name
from newsletter.subscribers.csv_io import EXPORT_COLUMNS
from tests.smtp_servers import RecordingHandler, SmtpTestServer

pytestmark = pytest.mark.both_stores  # see tests/conftest.py

REPO = Path(__file__).resolve().parent.parent
ATTR_TEMPLATES = REPO / "tests" / "render_fixtures" / "attr_tokens"

Active, Pending = SubscriberState.ACTIVE, SubscriberState.PENDING
Unsubscribed, Bounced = SubscriberState.UNSUBSCRIBED, SubscriberState.BOUNCED


@pytest.fixture
def ctx(make_context: Callable[..., app.Context], smtp_server: SmtpTestServer) -> app.Context:
    return make_context(smtp={"port": smtp_server.port})


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def states(ctx: app.Context) -> dict[str, str]:
    return {email: state for email, _, state, _ in list_subscribers(ctx.store)}


def set_state(ctx: app.Context, email: str, state: SubscriberState) -> None:
    with ctx.store.atomic() as conn:
        found = rows.get_by_email(conn, email)
        assert found is not None
        rows.set_state(conn, found.id, state, now=ctx.clock())


# --- addresses and states --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("  Ada@Example.ORG ", "ada@example.org"), ("zoe+news@example.com", "zoe+news@example.com")],
)
def test_addresses_are_normalized(raw, normalized):
    assert normalize_address(raw) == normalized


@pytest.mark.parametrize("raw", ["ada", "ada@", "@example.org", "a b@example.org", "ada@@x.org"])
def test_invalid_addresses_are_one_clear_line(raw):
    with pytest.raises(SubscriberError, match="is not a valid email address") as caught:
        normalize_address(raw)
    assert "\n" not in str(caught.value)


def test_add_is_active_and_unique_whatever_the_case(ctx, clock):
    added = add_subscriber(ctx.store, "Ada@Example.org", "Ada", now=clock())
    assert added.state is Active and added.email == "ada@example.org"
    with pytest.raises(SubscriberError, match=r"ada@example.org is already on the list \(active\)"):
        add_subscriber(ctx.store, "ADA@example.org", now=clock())


def test_an_unsubscribed_address_is_only_re_added_by_double_opt_in(ctx, clock):
    add_subscriber(ctx.store, "ada@example.org", "Ada", now=clock())
    assert remove_subscriber(ctx.store, "ada@example.org", now=clock()) is True
    assert remove_subscriber(ctx.store, "ada@example.org", now=clock()) is False  # twice: fine

    with pytest.raises(SubscriberError, match="unsubscribed earlier and is never re-added"):
        add_subscriber(ctx.store, "ada@example.org", now=clock())
    again = add_subscriber(ctx.store, "ada@example.org", now=clock(), double_opt_in=True)

    assert again.state is Pending and again.name == "Ada"  # the name is kept


def test_operator_add_activates_a_pending_address_but_not_a_bounced_one(ctx, clock):
    add_subscriber(ctx.store, "p@example.org", now=clock(), double_opt_in=True)
    add_subscriber(ctx.store, "b@example.org", now=clock())
    set_state(ctx, "b@example.org", Bounced)

    assert add_subscriber(ctx.store, "p@example.org", now=clock()).state is Active
    with pytest.raises(SubscriberError, match="bounced earlier"):
        add_subscriber(ctx.store, "b@example.org", now=clock())
    assert add_subscriber(ctx.store, "b@example.org", now=clock(), double_opt_in=True).state is (
        Pending
    )


def test_only_active_subscribers_get_the_digest(ctx, smtp_server: SmtpTestServer, clock):
    for email in ("active@example.org", "pending@example.org", "gone@example.org"):
        add_subscriber(ctx.store, email, now=clock(), double_opt_in=email.startswith("pending"))
    add_subscriber(ctx.store, "bounced@example.org", now=clock())
    set_state(ctx, "gone@example.org", Unsubscribed)
    set_state(ctx, "bounced@example.org", Bounced)

    summary = app.send_now(ctx)

    assert summary.report is not None and summary.report.sent == 1
    assert smtp_server.handler.recipients() == ["active@example.org"]


# --- import ----------------------------------------------------------------------------


def test_import_reports_rejected_rows_with_line_and_reason(ctx, tmp_path, clock):
    add_subscriber(ctx.store, "old@example.org", now=clock())
    remove_subscriber(ctx.store, "old@example.org", now=clock())
    source = write_csv(
        tmp_path / "list.csv",
        "Email,Name,City\n"
        "ada@example.org,Ada,London\n"
        "not-an-address,Bad,Paris\n"
        "bob@example.org,Bob\n"
        "ADA@example.org,Ada again,Rome\n"
        "\n"
        "old@example.org,Old,Oslo\n"
        '"zoe@example.com","Zoë, ""Z"" Müller","Berlin"\n',
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.imported == 2
    assert [line for line, _ in report.rejected] == [3, 4, 5, 7]
    reasons = dict(report.rejected)
    assert "'not-an-address' is not a valid email address" in reasons[3]
    assert reasons[4] == "expected 3 columns, found 2"
    assert reasons[5] == "ada@example.org repeats line 2"
    assert "old@example.org unsubscribed earlier and is never re-added" in reasons[7]
    assert states(ctx) == {
        "old@example.org": "unsubscribed",  # stays out, even when re-imported
        "ada@example.org": "active",
        "zoe@example.com": "active",
    }
    with ctx.store.atomic() as conn:
        zoe = rows.get_by_email(conn, "zoe@example.com")
    assert zoe is not None and zoe.name == 'Zoë, "Z" Müller' and zoe.attrs == {"city": "Berlin"}


def test_import_with_double_opt_in_is_pending(ctx, tmp_path, clock):
    source = write_csv(tmp_path / "list.csv", "email\nada@example.org\n")
    report = import_csv(ctx.store, source, now=clock(), double_opt_in=True)
    assert report.imported == 1 and states(ctx) == {"ada@example.org": "pending"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty; expected a header line 'email,name'"),
        ("name,city\nAda,London\n", "line 1: no 'email' column in the header"),
    ],
)
def test_unusable_files_are_one_line_errors(ctx, tmp_path, clock, content, message):
    source = write_csv(tmp_path / "list.csv", content)
    with pytest.raises(UsageError, match=re.escape(message)):
        import_csv(ctx.store, source, now=clock())


def test_a_bad_byte_costs_only_its_row_and_later_line_numbers_stay_right(ctx, tmp_path, clock):
    source = tmp_path / "latin1.csv"
    source.write_bytes(
        b"email,name\nada@example.org,Ada\nzoe@example.com,Zo\xeb\nbob@example.org,Bob\nbroken,X\n"
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.rejected[0] == (3, "not UTF-8 text (save the CSV as UTF-8)")
    assert (
        report.rejected[1][0] == 5
        and "'broken' is not a valid email address" in (report.rejected[1][1])
    )
    assert states(ctx) == {"ada@example.org": "active", "bob@example.org": "active"}


def test_missing_file_is_one_line(ctx, tmp_path, clock):
    with pytest.raises(UsageError, match=r"missing\.csv: file not found"):
        import_csv(ctx.store, tmp_path / "missing.csv", now=clock())


def test_custom_columns_reach_the_templates(make_context, smtp_server, tmp_path, clock):
    ctx = make_context(
        smtp={"port": smtp_server.port}, digest={"templates_dir": str(ATTR_TEMPLATES)}
    )
    source = write_csv(
        tmp_path / "list.csv",
        "email,name,City\nada@example.org,Ada,London\nzoe@example.com,Zoë,Zürich & Co\n",
    )
    import_csv(ctx.store, source, now=clock())

    app.send_now(ctx)

    by_rcpt = {r.rcpt_tos[0]: r.parse() for r in smtp_server.received}
    html_part = by_rcpt["zoe@example.com"].get_body(("html",))
    assert html_part is not None
    assert "Weather for Zürich &amp; Co, Zoë" in html_part.get_content()
    ada_part = by_rcpt["ada@example.org"].get_body(("html",))
    assert ada_part is not None and "Weather for London, Ada" in ada_part.get_content()


def test_repeats_past_the_tracked_addresses_are_still_caught(ctx, tmp_path, clock, monkeypatch):
    """Memory stays bounded: past the limit, the database is what catches a repeat."""
    monkeypatch.setattr("newsletter.subscribers.importing.MAX_TRACKED_ADDRESSES", 2)
    monkeypatch.setattr("newsletter.subscribers.importing.IMPORT_BATCH", 3)
    source = write_csv(
        tmp_path / "list.csv",
        "email\na@example.org\nb@example.org\nc@example.org\nd@example.org\n"
        "c@example.org\nd@example.org\nd@example.org\na@example.org\n",
    )

    report = import_csv(ctx.store, source, now=clock())

    assert report.imported == 4
    assert dict(report.rejected) == {
        6: "c@example.org is already on the list (active)",
        7: "d@example.org repeats line 5",
        8: "d@example.org is already on the list (active)",
        9: "a@example.org repeats line 2",
    }


# --- export ----------------------------------------------------------------------------


def test_export_has_state_dates_link_ids_and_attributes(ctx, tmp_path, clock):
    source = write_csv(tmp_path / "in.csv", "email,name,city\nada@example.org,Ada,London\n")
    import_csv(ctx.store, source, now=clock())
    add_subscriber(ctx.store, "gone@example.org", now=clock())
    clock.advance(days=1, microseconds=250)
    remove_subscriber(ctx.store, "gone@example.org", now=clock())
    out = io.StringIO()

    assert export_csv(ctx.store, out) == 2

    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(exported[0]) == [
        "email",
        "name",
        "state",
        "created_at",
        "confirmed_at",
        "unsubscribed_at",
        "public_id",
        "legacy_id",
        "city",
    ]
    assert exported[0]["state"] == "active" and exported[0]["city"] == "London"
    assert exported[0]["created_at"] == "2026-11-26T07:00:00+00:00"
    assert exported[1]["state"] == "unsubscribed"
    assert exported[1]["unsubscribed_at"] == "2026-11-27T07:00:00.000250+00:00"
    with ctx.store.atomic() as conn:
        ada = rows.get_by_email(conn, "ada@example.org")
    assert ada is not None and exported[0]["public_id"] == ada.public_id
    assert exported[0]["legacy_id"] == ""  # added by this release: no first-release links


def export_to(ctx: app.Context, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        export_csv(ctx.store, handle)
    return path


def records(ctx: app.Context) -> dict[str, tuple[object, ...]]:
    """Everything an export should carry, per address."""
    with ctx.store.atomic() as conn:
        found = conn.execute(select(subscribers)).all()
    return {
        r.email: (
            r.name,
            r.state,
            r.attrs,
            r.created_at,
            r.confirmed_at,
            r.unsubscribed_at,
            r.public_id,
            r.legacy_id,
        )
        for r in found
    }


def test_an_export_imports_back_with_states_dates_and_link_ids(make_context, tmp_path, clock):
    first = make_context()
    add_subscriber(first.store, "ada@example.org", '=HYPERLINK("http://x")', now=clock())
    clock.advance(hours=1, microseconds=1)
    add_subscriber(first.store, "gone@example.org", "Gone", now=clock())
    add_subscriber(first.store, "bounce@example.org", now=clock())
    pending = add_subscriber(first.store, "pending@example.org", now=clock(), double_opt_in=True)
    clock.advance(days=2)
    remove_subscriber(first.store, "gone@example.org", now=clock())
    set_state(first, "bounce@example.org", Bounced)
    exported = export_to(first, tmp_path / "export.csv")
    assert "'=HYPERLINK" in exported.read_text()  # no formula when opened in a spreadsheet
    second = make_context(store={"url": f"sqlite:///{tmp_path / 'second.db'}"})
    clock.advance(days=30)  # the move happens later: no date may become the import time

    report = import_csv(second.store, exported, now=clock())

    assert (report.imported, report.kept_out, report.rejected_count) == (2, 2, 0)
    assert report.from_export
    assert states(second) == {
        "ada@example.org": "active",
        "gone@example.org": "unsubscribed",
        "bounce@example.org": "bounced",
        "pending@example.org": "pending",  # no invented consent
    }
    assert records(second) == records(first)
    with second.store.atomic() as conn:
        moved = rows.get_by_email(conn, "pending@example.org")
    assert moved is not None and moved.public_id == pending.public_id


@pytest.mark.parametrize(
    "header",
    [
        "email,state",
        "email,name,state,created_at",  # only the start of an export's header
        "Email,Name,State,Created_At,Confirmed_At,Unsubscribed_At",  # not our spelling
    ],
)
def test_a_state_column_in_someone_elses_csv_is_an_ordinary_attribute(ctx, tmp_path, clock, header):
    width = header.count(",") + 1
    row = ",".join(["ada@example.org", "Ada", "California", "x", "y", "z"][:width])
    source = write_csv(tmp_path / "in.csv", f"{header}\n{row}\n")

    report = import_csv(ctx.store, source, now=clock())

    assert (report.imported, report.rejected_count, report.from_export) == (1, 0, False)
    with ctx.store.atomic() as conn:
        ada = rows.get_by_email(conn, "ada@example.org")
    assert ada is not None and ada.state is Active
    assert ada.attrs["state"] == ("California" if width > 2 else "Ada")


def test_an_unknown_state_in_an_export_is_rejected(ctx, tmp_path, clock):
    source = write_csv(
        tmp_path / "in.csv",
        ",".join(EXPORT_COLUMNS) + "\n"
        "ada@example.org,Ada,sleeping,2026-01-01T00:00:00+00:00,,,,\n"
        "bob@example.org,Bob,active,yesterday,,,,\n",
    )
    report = import_csv(ctx.store, source, now=clock())
    assert report.rejected == [
        (2, "unknown state 'sleeping' (expected one of pending, active, unsubscribed, bounced)"),
        (3, "created_at 'yesterday' is not an ISO 8601 date"),
    ]


def test_an_export_is_not_imported_with_double_opt_in(ctx, tmp_path, clock):
    add_subscriber(ctx.store, "ada@example.org", now=clock())
    exported = export_to(ctx, tmp_path / "export.csv")
    with pytest.raises(UsageError, match="import it without --double-opt-in"):
        import_csv(ctx.store, exported, now=clock(), double_opt_in=True)


# --- double opt-in by email ------------------------------------------------------------


def confirm_token(text: str) -> str:
    found = re.search(r"https://news\.example\.org/confirm/(\S+)", text)
    assert found is not None, "no confirmation link"
    return found.group(1)


def plain(received) -> str:
    part = received.parse().get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_add_with_double_opt_in_mails_a_link_that_confirms(ctx, smtp_server, clock):
    added = subscriptions.add(ctx, "ada@example.org", "Ada", double_opt_in=True)

    assert added.subscriber.state is Pending
    assert added.confirmation is not None and added.confirmation.sent == 1
    [mail] = smtp_server.received
    assert mail.rcpt_tos == ["ada@example.org"]
    result = links.confirm(ctx, confirm_token(plain(mail)))
    assert result.outcome is Outcome.DONE and result.subscriber.state is Active


def test_add_with_double_opt_in_fails_fast_when_smtp_is_down(make_context, clock):
    ctx = make_context(smtp={"port": free_port(), "timeout": 2})
    with pytest.raises(DeliveryError, match="cannot connect to the SMTP server"):
        subscriptions.add(ctx, "ada@example.org", double_opt_in=True)
    assert states(ctx) == {}  # nothing was added


def test_import_with_double_opt_in_mails_everyone_once_over_reused_connections(
    make_context, tmp_path, clock, monkeypatch
):
    monkeypatch.setattr("newsletter.subscribers.importing.IMPORT_BATCH", 50)  # several batches
    with SmtpTestServer() as server:
        ctx = make_context(smtp={"port": server.port, "reconnect_after": 10_000})
        lines = "".join(f"user{i}@example.org,User {i}\n" for i in range(123))
        source = write_csv(tmp_path / "list.csv", "email,name\n" + lines + "user7@example.org,x\n")
        probes = server.handler.sessions  # aiosmtpd connects once to see it is up

        report, mailed = subscriptions.import_subscribers(ctx, source, double_opt_in=True)

        assert report.imported == 123 and len(report.rejected) == 1
        assert mailed is not None
        assert (mailed.sent, mailed.failed, mailed.waiting) == (123, [], 0)
        assert sorted(server.handler.recipients()) == sorted(
            f"user{i}@example.org" for i in range(123)
        )
        # Connections are reused: the check before importing, then each batch's mailing
        # (three of them) over the engine's connections, not one per message.
        mailings = 3
        assert server.handler.sessions - probes <= 1 + ctx.settings.smtp.connections * mailings
        assert states(ctx)["user122@example.org"] == "pending"


def test_confirmation_emails_report_refusals_with_the_reason(make_context, tmp_path, clock):
    def refuse(address: str, attempt: int) -> str | None:
        return "550 5.1.1 no such user" if address == "nobody@example.org" else None

    with SmtpTestServer(RecordingHandler(rcpt_reply=refuse)) as server:
        ctx = make_context(smtp={"port": server.port, "reconnect_after": 2})
        source = write_csv(
            tmp_path / "list.csv",
            "email\na@example.org\nnobody@example.org\nb@example.org\nc@example.org\n",
        )

        _, mailed = subscriptions.import_subscribers(ctx, source, double_opt_in=True)

        assert mailed is not None and mailed.sent == 3
        assert mailed.failed == [("nobody@example.org", "550 5.1.1 no such user")]
        assert mailed.failed_count == 1
        assert sorted(server.handler.recipients()) == [
            "a@example.org",
            "b@example.org",
            "c@example.org",
        ]


def test_import_with_double_opt_in_fails_fast_when_smtp_is_down(make_context, tmp_path, clock):
    ctx = make_context(smtp={"port": free_port(), "timeout": 2})
    source = write_csv(tmp_path / "list.csv", "email\nada@example.org\n")
    with pytest.raises(DeliveryError):
        subscriptions.import_subscribers(ctx, source, double_opt_in=True)
    assert states(ctx) == {}


# --- export and import, for any content ------------------------------------------------

_dates = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=30, deadline=None)
@given(
    people=st.lists(
        st.tuples(
            st.text(max_size=120),  # name
            st.text(max_size=250),  # an attribute value
            st.sampled_from(list(SubscriberState)),
            _dates,
            st.one_of(st.none(), _dates),
            st.one_of(st.none(), st.integers(1, 2**31 - 1)),  # a first-release row id
        ),
        max_size=6,
    )
)
def test_an_export_round_trips_exactly_whatever_it_holds(people):
    """Names with quotes, commas, formulas, newlines, any script: the move keeps every field."""
    with tempfile.TemporaryDirectory() as folder:
        first = Store.open(f"sqlite:///{folder}/first.db")
        second = Store.open(f"sqlite:///{folder}/second.db")
        now = datetime(2026, 11, 26, tzinfo=UTC)
        with first.atomic() as conn:
            rows.insert_records(
                conn,
                [
                    rows.SubscriberRecord(
                        f"user{i}@example.org",
                        clean_name(name),
                        state,
                        created,
                        {"city": clean_attr(city)},
                        confirmed_at=confirmed,
                        unsubscribed_at=confirmed if state is Unsubscribed else None,
                        legacy_id=legacy,
                    )
                    for i, (name, city, state, created, confirmed, legacy) in enumerate(people)
                    if legacy is None or legacy not in {p[5] for p in people[:i]}
                ],
                now=now,
            )
        exported = Path(folder) / "export.csv"
        with exported.open("w", newline="", encoding="utf-8") as handle:
            export_csv(first, handle)

        report = import_csv(second, exported, now=now)

        assert report.rejected == []
        assert stored(second) == stored(first)
        first.close()
        second.close()


def stored(store: Store) -> list[tuple[object, ...]]:
    with store.atomic() as conn:
        found = conn.execute(select(subscribers).order_by(subscribers.c.email)).all()
    return [tuple(r)[1:6] + tuple(r)[7:] for r in found]  # all but id and updated_at
