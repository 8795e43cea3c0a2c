"""Schema revisions on SQLite and PostgreSQL: what each makes, upgrades that lose nothing.

The first release's databases (``fixtures/release_0_1_0/``: a SQLite file and a PostgreSQL
dump, both written by that release's own code) are the reference for revision 0001 and the
data every upgrade must keep.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, MetaData, create_engine, inspect, select, text

from newsletter import app
from newsletter.errors import StoreError
from newsletter.inbox import free_port
from newsletter.store import Store
from newsletter.store.database import schema_status, upgrade_database
from newsletter.store.migrations import VERSION_TABLE, alembic_config, latest_revision
from newsletter.store.schema import is_public_id, subscribers
from newsletter.web import create_app
from tests.conftest import REPO, STORE_BACKENDS, Run
from tests.postgres import PostgresCluster
from tests.smtp_servers import SmtpTestServer

with warnings.catch_warnings():  # starlette prefers httpx2; httpx is what is installed
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

FIXTURES = REPO / "tests" / "fixtures"
RELEASE_DB = FIXTURES / "release_0_1_0" / "newsletter.sqlite3.fixture"
RELEASE_SQL = FIXTURES / "release_0_1_0" / "postgresql.sql"
RELEASE_LINKS: dict[str, Any] = json.loads(
    (FIXTURES / "release_0_1_0_links.json").read_text(encoding="utf-8")
)
FIRST_RELEASE_TABLES = {
    "schema_version",
    "subscribers",
    "articles",
    "digests",
    "digest_articles",
    "deliveries",
    "locks",
    "feed_state",
    "slot_runs",
    "used_tokens",
}


@pytest.fixture(params=STORE_BACKENDS)
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., str]:
    """``new_database("label")``: the URL of a database without tables, on each engine;
    ``release=True``: a copy of the one the first release wrote."""
    cluster: PostgresCluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres")

    def make(label: str, *, release: bool = False) -> str:
        if cluster is None:
            path = tmp_path / f"{label}.db"
            if release:
                shutil.copyfile(RELEASE_DB, path)
            return f"sqlite:///{path}"
        name = cluster.create_database(label)
        request.addfinalizer(lambda: cluster.drop_database(name))
        if release:
            cluster.load_sql_file(RELEASE_SQL, name)
        return cluster.url(name)

    return make


@pytest.fixture
def release_url(new_database: Callable[..., str]) -> str:
    """A database the first release wrote (a copy: tests change it)."""
    return new_database("release", release=True)


@pytest.fixture
def empty_url(new_database: Callable[..., str]) -> str:
    return new_database("empty")


def connected(url: str, use: Callable[[Connection], Any]) -> Any:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return use(conn)
    finally:
        engine.dispose()


def _sqlite_affinity(declared: str) -> str:
    """SQLite's type affinity (its documented rules): VARCHAR(n) and TEXT are one type there."""
    declared = declared.upper()
    if "INT" in declared:
        return "INTEGER"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    return declared


def shape(conn: Connection) -> dict[str, Any]:
    """Every table's columns, keys, unique constraints and indexes, as the database reports."""
    found = inspect(conn)
    sqlite = conn.dialect.name == "sqlite"
    tables: dict[str, Any] = {}
    for table in sorted(set(found.get_table_names()) - {VERSION_TABLE}):
        columns = [
            (
                c["name"],
                _sqlite_affinity(str(c["type"])) if sqlite else str(c["type"]),
                c["nullable"],
            )
            for c in found.get_columns(table)
        ]
        tables[table] = {
            "columns": sorted(columns),
            "primary_key": found.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], fk["name"])
                for fk in found.get_foreign_keys(table)
            ),
            "unique": sorted(
                (tuple(u["column_names"]), u["name"]) for u in found.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in found.get_indexes(table)
            ),
        }
    return tables


def table_rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    reflected = MetaData()
    reflected.reflect(conn)
    return {
        name: sorted((tuple(row) for row in conn.execute(select(table))), key=lambda row: repr(row))
        for name, table in reflected.tables.items()
        if name != VERSION_TABLE
    }


def run_revisions(url: str, target: str) -> None:
    """Run the shipped revisions up to ``target`` with Alembic itself, no shortcut."""

    def upgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, target)

    connected(url, upgrade)


def test_revision_0001_makes_exactly_the_first_release_schema(empty_url, release_url):
    run_revisions(empty_url, "0001")

    assert connected(empty_url, shape) == connected(release_url, shape)
    assert set(connected(release_url, shape)) == FIRST_RELEASE_TABLES


def test_the_revisions_from_nothing_make_the_schema_a_new_database_gets(new_database):
    migrated, fresh = new_database("migrated"), new_database("fresh")

    run_revisions(migrated, "head")
    Store.open(fresh).close()

    assert connected(migrated, shape) == connected(fresh, shape)
    assert "schema_version" not in connected(fresh, shape)


def test_a_first_release_database_is_refused_until_upgraded(release_url):
    with pytest.raises(StoreError) as refused:
        Store.open(release_url)

    message = str(refused.value)
    assert "\n" not in message
    assert "is at schema revision 0001" in message
    assert message.endswith("run `newsletter db upgrade`")
    assert schema_status(release_url)[1].current == "0001"
    assert "schema_version" in connected(release_url, table_rows)  # nothing was written


def test_the_upgrade_keeps_every_row_and_gives_each_subscriber_link_ids(release_url):
    before = connected(release_url, table_rows)

    _, result = upgrade_database(release_url, now=datetime(2026, 11, 28, 9, 30, tzinfo=UTC))

    assert (result.previous, result.current) == ("0001", latest_revision())
    after = connected(release_url, table_rows)
    # Revision 0006 adds the (empty) suppression list and sign-up queue, 0007 bounce reports,
    # 0008 the (empty) admin accounts.
    added = {"suppressions", "signup_requests", "bounce_reports"}
    admin_tables = {"admin_users", "admin_sessions", "login_failures"}
    assert set(after) == set(before) - {"schema_version"} | added | admin_tables
    assert after["suppressions"] == after["signup_requests"] == after["bounce_reports"] == []
    assert all(after[table] == [] for table in admin_tables)
    counts = {name: len(rows) for name, rows in after.items()}
    assert counts["subscribers"] == 9 and counts["digests"] == 2 and counts["deliveries"] == 13
    # Every mailing the first release sent was a digest (revision 0006's kind) and has no
    # archive key (revision 0008's): both come last.
    assert after["digests"] == [(*row, "digest", None) for row in before["digests"]]
    others = (after.keys() & before.keys()) - {"subscribers", "articles", "digests", "deliveries"}
    for table in others:
        assert after[table] == before[table], table
    # Deliveries keep every value; the lease columns (revision 0009) come last, empty.
    assert [row[:-2] for row in after["deliveries"]] == before["deliveries"]
    assert all(row[-2:] == (None, None) for row in after["deliveries"])
    # Articles keep every value; the one Markdown file without a URL is keyed as today
    # (revision 0005), in its column and in its stored copy.
    renamed = {"file:008_observatory-open-night": "md:008_observatory-open-night"}
    expected = [
        (
            *row[:1],
            renamed.get(row[1], row[1]),
            *row[2:7],
            {**json.loads(row[7]), "key": renamed.get(row[1], row[1])},
        )
        for row in before["articles"]
    ]
    assert [(*row[:7], json.loads(row[7])) for row in after["articles"]] == expected
    # The first release's columns are untouched; the new ones come last (no state reasons).
    assert [row[:9] for row in after["subscribers"]] == before["subscribers"]
    assert {row[11] for row in after["subscribers"]} == {None}
    found = connected(
        release_url, lambda conn: conn.execute(select(subscribers).order_by(subscribers.c.id)).all()
    )
    assert [r.legacy_id for r in found] == [r.id for r in found] == list(range(1, 10))
    assert all(is_public_id(r.public_id) for r in found)
    assert len({r.public_id for r in found}) == len(found)


def test_sqlite_keeps_a_copy_of_the_file_as_it_was_named_by_revision_and_time(tmp_path):
    path = tmp_path / "news.db"
    shutil.copyfile(RELEASE_DB, path)
    url = f"sqlite:///{path}"
    before = connected(url, table_rows)

    _, result = upgrade_database(url, now=datetime(2026, 11, 28, 9, 30, 5, tzinfo=UTC))

    assert result.backup == tmp_path / "news.db.0001-20261128T093005Z.bak"
    assert connected(f"sqlite:///{result.backup}", table_rows) == before
    _, again = upgrade_database(url, now=datetime(2026, 11, 28, 9, 31, tzinfo=UTC))
    assert not again.changed and again.backup is None  # nothing to do, no copy


def test_an_upgraded_database_has_the_shape_of_a_new_one(release_url, empty_url):
    upgrade_database(release_url, now=datetime.now(UTC))
    Store.open(empty_url).close()

    assert connected(release_url, shape) == connected(empty_url, shape)


def test_first_release_unsubscribe_links_unsubscribe_their_own_person_after_the_upgrade(
    release_url, make_context: Callable[..., app.Context]
):
    upgrade_database(release_url, now=datetime.now(UTC))
    ctx = make_context(store={"url": release_url}, web={"secret": RELEASE_LINKS["secret"]})
    client = TestClient(create_app(ctx))
    links: dict[str, str] = RELEASE_LINKS["unsubscribe_in_digest_1"]
    gone: set[str] = set()

    for email, token in links.items():
        response = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert response.text == "unsubscribed", email
        gone.add(email)
        with ctx.store.atomic() as conn:
            left = conn.execute(
                select(subscribers.c.email).where(subscribers.c.state == "unsubscribed")
            )
            assert gone <= set(left.scalars())
            active = conn.execute(
                select(subscribers.c.email)
                .where(subscribers.c.email.in_(list(links)))
                .where(subscribers.c.state == "active")
            )
            assert set(active.scalars()) == set(links) - gone


def test_the_unfinished_digest_resumes_and_reaches_exactly_its_pending_recipients(
    release_url, make_context: Callable[..., app.Context], tmp_path: Path
):
    pending = connected(
        release_url,
        lambda conn: sorted(
            conn.execute(
                text(
                    "SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
                    " WHERE d.digest_id = 2 AND d.state = 'pending' AND s.state = 'active'"
                )
            ).scalars()
        ),
    )
    assert len(pending) == 6
    upgrade_database(release_url, now=datetime.now(UTC))
    (tmp_path / "no-articles").mkdir()
    with SmtpTestServer() as server:
        ctx = make_context(
            store={"url": release_url},
            smtp={"port": server.port},
            sources={"articles_dir": str(tmp_path / "no-articles")},
            web={"secret": RELEASE_LINKS["secret"]},
        )

        summary = app.send_now(ctx)

    assert [report.digest_id for report in summary.resumed] == [2]
    assert summary.digest_id is None  # no new digest: only the unfinished one went out
    assert sorted(server.handler.recipients()) == pending  # each exactly once, nobody else
    states = connected(
        release_url,
        lambda conn: dict(conn.execute(text("SELECT id, state FROM digests")).all()),
    )
    assert states == {1: "sent", 2: "sent"}


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["subscribers", "list"],
        ["send-now", "--dry-run"],
        ["preview", "-o", "out.html"],
        ["resend", "1", "--failed"],
    ],
)
def test_every_command_refuses_a_database_behind_the_code_with_one_line(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
):
    shutil.copyfile(RELEASE_DB, env / "old.db")
    monkeypatch.setenv("NEWSLETTER_STORE__URL", f"sqlite:///{env / 'old.db'}")

    code, out, err = run(*command)

    assert code == 1 and out == ""
    assert err == (
        f"error: database {env / 'old.db'} is at schema revision 0001, this version of "
        f"newsletter needs {latest_revision()}: run `newsletter db upgrade`\n"
    )


def test_db_status_and_upgrade_say_where_the_database_stands_and_what_was_kept(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch
):
    database = env / "old.db"
    shutil.copyfile(RELEASE_DB, database)
    monkeypatch.setenv("NEWSLETTER_STORE__URL", f"sqlite:///{database}")
    latest = latest_revision()

    code, out, _ = run("db", "status")
    assert code == 0
    assert out.splitlines()[0] == f"database: {database}"
    assert out.splitlines()[1].startswith("current revision: 0001 (The first release's schema")
    assert out.splitlines()[2].startswith(f"latest revision:  {latest} (")
    assert out.splitlines()[3] == "behind: run `newsletter db upgrade`"

    code, out, _ = run("db", "upgrade")
    assert code == 0
    upgraded, kept = out.splitlines()
    assert upgraded.startswith(f"upgraded {database} from revision 0001 to {latest} (")
    backup = Path(kept.removeprefix("the database as it was is kept in "))
    assert backup.parent == env and re.fullmatch(r"old\.db\.0001-\d{8}T\d{6}Z\.bak", backup.name)

    assert run("db", "status")[1].splitlines()[3] == "up to date"
    assert run("db", "upgrade")[1].startswith(f"{database} is already at the latest revision")
    assert run("subscribers", "list")[0] == 0


def test_any_command_creates_a_new_database_at_the_latest_revision(run: Run, env: Path):
    code, out, _ = run("db", "status")
    assert code == 0 and out.splitlines()[1] == "current revision: none (an empty database)"

    assert run("subscribers", "add", "ada@example.org")[0] == 0

    lines = run("db", "status")[1].splitlines()
    assert lines[1].removeprefix("current revision: ") == lines[2].removeprefix(
        "latest revision:  "
    )
    assert lines[3] == "up to date"


def test_a_database_a_newer_release_wrote_is_refused_with_one_line(
    empty_url, run, env, monkeypatch
):
    Store.open(empty_url).close()
    connected(
        empty_url,
        lambda conn: conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'")),
    )
    monkeypatch.setenv("NEWSLETTER_STORE__URL", empty_url)

    with pytest.raises(StoreError, match=r"newer release wrote it; upgrade newsletter$"):
        Store.open(empty_url)
    code, _, err = run("db", "upgrade")
    assert code == 1 and err.count("\n") == 1 and "0099, which this version" in err
    code, out, _ = run("db", "status")
    assert code == 0 and "ahead: a newer release of newsletter wrote it" in out
    assert run("subscribers", "list")[0] == 1


def test_processes_opening_a_new_database_at_once_create_it_once(empty_url):
    ready = threading.Barrier(4, timeout=30)
    problems: list[BaseException] = []

    def open_it() -> None:
        try:
            ready.wait()
            Store.open(empty_url).close()
        except BaseException as exc:  # reported below, with the engine's message
            problems.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    assert schema_status(empty_url)[1].up_to_date
    versions = connected(
        empty_url, lambda conn: conn.execute(text(f"SELECT * FROM {VERSION_TABLE}")).all()
    )
    assert len(versions) == 1


@pytest.mark.parametrize("command", [["status"], ["db", "status"], ["db", "upgrade"]])
def test_an_unreachable_postgresql_is_one_line_without_the_password(
    run: Run, env: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
):
    url = f"postgresql+psycopg://news:hunter2@127.0.0.1:{free_port()}/news"
    monkeypatch.setenv("NEWSLETTER_STORE__URL", url)

    code, out, err = run(*command)

    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: cannot open database {url.replace('hunter2', '***')}: ")
    assert "Connection refused" in err and "hunter2" not in err


def test_articles_the_first_release_sent_are_not_sent_again_after_the_upgrade(
    release_url, make_context: Callable[..., app.Context], tmp_path: Path
):
    """Its Markdown file without a URL was keyed ``file:<stem>``; today it is ``md:<stem>``
    (and a bare feed id became ``id:<feed URL>#<id>``): revision 0005 rewrites the keys, in
    the column and in the stored article, so what went out stays sent and what waits still
    goes out."""
    waiting = {
        "key": "id:42",
        "title": "Entry 42 is waiting for a digest",
        "published": "2026-11-19T06:00:00+00:00",
        "summary": "A feed entry the first release stored but did not send yet.",
        "paragraphs": ["A feed entry the first release stored but did not send yet."],
        "origin": "https://feeds.example.org/rss.xml",
    }
    connected(
        release_url,
        lambda conn: conn.execute(
            text(
                "INSERT INTO articles (key, url, title, published, first_seen, origin, payload) "
                "VALUES ('id:42', NULL, :title, '2026-11-19 06:00:00', '2026-11-20 06:00:00', "
                ":origin, :payload)"
            ),
            {
                "title": waiting["title"],
                "origin": waiting["origin"],
                "payload": json.dumps(waiting),
            },
        ),
    )
    upgrade_database(release_url, now=datetime.now(UTC))
    keys = connected(
        release_url, lambda conn: set(conn.execute(text("SELECT key FROM articles")).scalars())
    )
    assert {"md:008_observatory-open-night", "id:https://feeds.example.org/rss.xml#42"} <= keys
    assert not {"file:008_observatory-open-night", "id:42"} & keys

    with SmtpTestServer() as server:
        ctx = make_context(
            store={"url": release_url},
            smtp={"port": server.port},
            sources={"articles_dir": str(REPO / "seeds")},
            web={"secret": RELEASE_LINKS["secret"]},
        )
        summary = app.send_now(ctx)

    # The seeds the first release sent are known as sent; what goes out is the collector's
    # real file (added since) and the entry that was waiting, under its new key.
    assert summary.digest_id == 3
    with ctx.store.atomic() as conn:
        carried = conn.execute(
            text(
                "SELECT a.key FROM articles a JOIN digest_articles d ON d.article_id = a.id "
                "WHERE d.digest_id = 3"
            )
        ).scalars()
        assert sorted(carried) == [
            "file:b6c0e47541ad49e3",
            "id:https://feeds.example.org/rss.xml#42",
        ]
