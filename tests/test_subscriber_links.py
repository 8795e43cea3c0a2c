"""Links name the right person: public ids, first-release links, and a move to a fresh database.

The first release put the subscriber's row id in its links. A database it wrote
(``fixtures/release_0_1_0/``) is upgraded in place (``tests/test_migrations.py`` checks
the upgrade itself on both engines); the links from its emails
(``fixtures/release_0_1_0_links.json``, made with that release's code) must keep working,
also after an export and an import into a fresh database, where row ids differ: a link names
the same person or is refused, never someone else.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsletter import app
from newsletter.models import SubscriberState
from newsletter.store import subscribers as rows
from newsletter.store.database import upgrade_database
from newsletter.store.schema import is_public_id
from newsletter.subscribers import add_subscriber, export_csv, import_csv, remove_subscriber
from newsletter.web import create_app
from tests.conftest import REPO

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

FIXTURES = REPO / "tests" / "fixtures"
RELEASE_DB = FIXTURES / "release_0_1_0" / "newsletter.sqlite3.fixture"
RELEASE_LINKS: dict[str, Any] = json.loads(
    (FIXTURES / "release_0_1_0_links.json").read_text(encoding="utf-8")
)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def release_db(tmp_path: Path) -> Path:
    """A copy of the first release's database, upgraded (``newsletter db upgrade``)."""
    copy = tmp_path / "release.db"
    shutil.copyfile(RELEASE_DB, copy)
    upgrade_database(f"sqlite:///{copy}", now=datetime.now(UTC))
    return copy


@pytest.fixture
def open_db(make_context: Callable[..., app.Context]) -> Callable[[Path], app.Context]:
    """A context on ``path`` with the secret the first release's links were signed with."""

    def opener(path: Path) -> app.Context:
        return make_context(
            store={"url": f"sqlite:///{path}"}, web={"secret": RELEASE_LINKS["secret"]}
        )

    return opener


def masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[: 2 if len(local) > 3 else 1]}***@{domain}"


def test_first_release_unsubscribe_links_work_on_the_upgraded_database(release_db, open_db):
    ctx = open_db(release_db)
    client = TestClient(create_app(ctx))
    links: dict[str, str] = RELEASE_LINKS["unsubscribe_in_digest_1"]

    for email, token in links.items():
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200 and masked(email) in page.text, email

    ana = client.post(f"/unsubscribe/{links['ana@example.org']}", data=ONE_CLICK)

    assert ana.text == "unsubscribed"
    with ctx.store.atomic() as conn:
        assert rows.states_of(conn, list(links)) == {
            email: "unsubscribed" if email == "ana@example.org" else "active" for email in links
        }


def test_a_used_first_release_confirm_link_stays_used(release_db, open_db):
    """Even after the address left and asked again, the old link cannot confirm it."""
    ctx = open_db(release_db)
    client = TestClient(create_app(ctx))
    [(email, used)] = RELEASE_LINKS["confirm_used"].items()
    remove_subscriber(ctx.store, email, now=ctx.clock())
    add_subscriber(ctx.store, email, now=ctx.clock(), double_opt_in=True)

    replay = client.post(f"/confirm/{used}")

    assert replay.status_code == 200 and "This link was already used" in replay.text
    with ctx.store.atomic() as conn:
        assert rows.states_of(conn, [email]) == {email: "pending"}


def test_a_mailed_first_release_confirm_link_confirms_its_own_address(release_db, open_db):
    ctx = open_db(release_db)
    client = TestClient(create_app(ctx))
    [(email, token)] = RELEASE_LINKS["confirm_mailed"].items()

    assert "You're subscribed" in client.post(f"/confirm/{token}").text
    with ctx.store.atomic() as conn:
        assert rows.states_of(conn, [email]) == {email: "active"}


def move(source: app.Context, target: app.Context, tmp_path: Path) -> None:
    exported = tmp_path / "export.csv"
    with exported.open("w", newline="", encoding="utf-8") as handle:
        export_csv(source.store, handle)
    report = import_csv(target.store, exported, now=target.clock())
    assert report.rejected_count == 0, report.rejected


def test_old_links_name_the_same_person_after_export_and_import_into_a_fresh_database(
    release_db, open_db, tmp_path
):
    """The reported bug: ids change order in the new database; the links must not follow."""
    old = open_db(release_db)
    new = open_db(tmp_path / "fresh.db")
    for email in ("zed@example.org", "yan@example.org", "xia@example.org"):  # take ids 1-3
        add_subscriber(new.store, email, now=new.clock())
    move(old, new, tmp_path)
    client = TestClient(create_app(new))
    links: dict[str, str] = RELEASE_LINKS["unsubscribe_in_digest_1"]

    for email, token in links.items():
        page = client.get(f"/unsubscribe/{token}")
        assert page.status_code == 200 and masked(email) in page.text, email
    assert client.post(f"/unsubscribe/{links['bo@example.org']}", data=ONE_CLICK).status_code == 200

    with new.store.atomic() as conn:
        unsubscribed = {e for e, s in rows.states_of(conn, list(links)).items() if s != "active"}
        others = rows.states_of(conn, ["zed@example.org", "yan@example.org", "xia@example.org"])
    assert unsubscribed == {"bo@example.org"}
    assert set(others.values()) == {"active"}


def test_links_made_after_the_upgrade_also_survive_the_move(release_db, open_db, tmp_path):
    old = open_db(release_db)
    added = add_subscriber(old.store, "new@example.org", now=old.clock())
    link = old.unsubscribe_url(added.public_id).rsplit("/", 1)[1]
    new = open_db(tmp_path / "fresh.db")
    move(old, new, tmp_path)

    response = TestClient(create_app(new)).post(f"/unsubscribe/{link}", data=ONE_CLICK)

    assert response.text == "unsubscribed"
    with new.store.atomic() as conn:
        assert rows.states_of(conn, ["new@example.org"]) == {"new@example.org": "unsubscribed"}


def test_link_ids_already_taken_in_the_target_are_dropped_not_shared(release_db, open_db, tmp_path):
    """Merging into a database where someone already has that id: the old links of the
    imported person are refused, and the one already there keeps their own."""
    old = open_db(release_db)
    new = open_db(tmp_path / "fresh.db")
    with old.store.atomic() as conn:
        ana = rows.get_by_email(conn, "ana@example.org")
    assert ana is not None
    with new.store.atomic() as conn:
        rows.insert_records(
            conn,
            [
                rows.SubscriberRecord(
                    "resident@example.org",
                    "Resident",
                    SubscriberState.ACTIVE,
                    new.clock(),
                    public_id=ana.public_id,
                )
            ],
            now=new.clock(),
        )
    exported = tmp_path / "export.csv"
    with exported.open("w", newline="", encoding="utf-8") as handle:
        export_csv(old.store, handle)

    report = import_csv(new.store, exported, now=new.clock())

    assert report.new_links == 1
    client = TestClient(create_app(new))
    link = old.unsubscribe_url(ana.public_id).rsplit("/", 1)[1]
    assert masked("resident@example.org") in client.get(f"/unsubscribe/{link}").text
    with new.store.atomic() as conn:
        moved = rows.get_by_email(conn, "ana@example.org")
    assert moved is not None and moved.public_id != ana.public_id
    assert is_public_id(moved.public_id)
