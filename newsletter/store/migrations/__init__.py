"""The schema's revisions (Alembic, shipped in the package): check, create, upgrade.

- A database with none of our tables is made from ``schema.metadata`` and stamped with the
  latest revision (what running every revision would give, faster).
- A database at the latest revision is used as it is.
- A database behind it is refused until ``newsletter db upgrade`` (:func:`upgrade_database`)
  runs the missing revisions, in one transaction, after keeping a copy of a SQLite file.
- A database at a revision this code does not know (a newer release wrote it) is refused.

Databases written before Alembic carry the old ``schema_version`` table instead: version 1
(the first release) is revision 0001, version 2 is 0002. Schema work holds a lock (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so two processes opening a new database
at once create it once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from newsletter.errors import StoreError
from newsletter.store.schema import metadata

VERSION_TABLE = "newsletter_alembic_version"  # not "alembic_version": a shared database may
# hold another application's Alembic table
LEGACY_VERSION_TABLE = "schema_version"
_LEGACY_REVISIONS = {1: "0001", 2: "0002"}  # the old mechanism's versions, as revisions
_OUR_TABLES = frozenset(metadata.tables) | {LEGACY_VERSION_TABLE, VERSION_TABLE}
_SCRIPTS = Path(__file__).resolve().parent
_ADVISORY_LOCK_KEY = 7_236_111_401  # any constant: "newsletter schema work" on PostgreSQL

UPGRADE_HINT = "run `newsletter db upgrade`"


def alembic_config() -> Config:
    """The Alembic configuration, made in code: no alembic.ini is needed."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


@cache
def scripts() -> ScriptDirectory:
    """The shipped revisions (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def latest_revision() -> str:
    head = scripts().get_current_head()
    assert head is not None, "the package ships its revisions"
    return head


def describe(revision: str | None) -> str:
    """``0002 (Links name a random public id; ...)``: a revision and its first doc line."""
    if revision is None:
        return "none (an empty database)"
    if revision not in _revision_ids():
        return f"{revision} (unknown to this version of newsletter)"
    script = scripts().get_revision(revision)
    assert script is not None
    return f"{revision} ({script.doc.strip().splitlines()[0].rstrip('.')})"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: ``current`` is None for a database without our tables."""

    current: str | None
    latest: str

    @property
    def empty(self) -> bool:
        return self.current is None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest

    @property
    def known(self) -> bool:
        """False when a newer release wrote the database (its revision is not ours)."""
        return self.current is None or self.current in _revision_ids()


@cache
def _revision_ids() -> frozenset[str]:
    return frozenset(script.revision for script in scripts().walk_revisions())


def read_status(conn: Connection, where: str) -> SchemaStatus:
    """The database's revision (from our version table, else the old ``schema_version``)."""
    tables = set(inspect(conn).get_table_names()) & _OUR_TABLES
    latest = latest_revision()
    if VERSION_TABLE in tables:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        current = context.get_current_revision()
        if current is not None:
            return SchemaStatus(current, latest)
    if LEGACY_VERSION_TABLE in tables:
        version = conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar()
        if version is None and "subscribers" in tables:
            version = 1  # the first release made its tables in the same transaction
        if version is not None:
            return SchemaStatus(_LEGACY_REVISIONS.get(version, f"schema_version {version}"), latest)
    if tables - {VERSION_TABLE, LEGACY_VERSION_TABLE}:
        raise StoreError(
            f"database {where} has newsletter tables ({', '.join(sorted(tables))}) but no "
            "record of their schema revision; restore it from a backup or use an empty database"
        )
    return SchemaStatus(None, latest)


def refuse_unless_current(status: SchemaStatus, where: str) -> None:
    """StoreError for a database behind the code (upgrade it) or ahead of it (upgrade us)."""
    if status.up_to_date or status.empty:
        return
    if not status.known:
        raise StoreError(
            f"database {where} is at schema revision {status.current}, which this version of "
            f"newsletter does not know (it knows up to {status.latest}): a newer release "
            "wrote it; upgrade newsletter"
        )
    raise StoreError(
        f"database {where} is at schema revision {status.current}, this version of newsletter "
        f"needs {status.latest}: {UPGRADE_HINT}"
    )


def lock_for_schema_work(conn: Connection) -> None:
    """Begin a transaction that keeps other processes' schema work (and SQLite writers) out."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})


def create_latest(conn: Connection) -> None:
    """Make every table of today's schema and stamp it with the latest revision."""
    metadata.create_all(conn)
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    context.stamp(scripts(), "head")


@dataclass(frozen=True)
class UpgradeResult:
    """What ``db upgrade`` did: from which revision to which, and the copy it kept."""

    previous: str | None
    current: str
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        return self.previous != self.current


def upgrade(conn: Connection, where: str, *, now: datetime) -> UpgradeResult:
    """Bring the database on ``conn`` to the latest revision; the caller commits.

    ``conn`` must have no transaction yet: this takes the schema lock first.
    """
    lock_for_schema_work(conn)
    status = read_status(conn, where)
    if status.empty:
        create_latest(conn)
        return UpgradeResult(None, status.latest)
    if not status.known:
        refuse_unless_current(status, where)
    if status.up_to_date:
        return UpgradeResult(status.current, status.current or status.latest)
    backup = _keep_sqlite_copy(conn, status.current or "", now=now)
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    if context.get_current_revision() is None:  # written before Alembic: say where it stands
        context.stamp(scripts(), status.current or "")
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
    return UpgradeResult(status.current, status.latest, backup)


def _keep_sqlite_copy(conn: Connection, revision: str, *, now: datetime) -> Path | None:
    """A consistent copy of a SQLite file beside it, named with its revision and the time.

    Made while this connection holds the write lock, so it is exactly what gets upgraded.
    """
    database = conn.engine.url.database
    if conn.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database.removeprefix("file:").partition("?")[0])
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{revision}-{stamp}.bak")
    for attempt in range(2, 100):
        if not target.exists():
            break
        target = path.with_name(f"{path.name}.{revision}-{stamp}-{attempt}.bak")
    source = sqlite3.connect(path)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target


def check_or_create(engine: Engine, where: str) -> SchemaStatus:
    """Make a new database at the latest revision; refuse one behind or ahead of the code."""
    with engine.connect() as conn:
        status = read_status(conn, where)
        conn.rollback()
    if status.empty:  # create it, unless another process did since we looked
        with engine.connect() as conn:
            lock_for_schema_work(conn)
            status = read_status(conn, where)
            if status.empty:
                create_latest(conn)
                status = SchemaStatus(status.latest, status.latest)
            conn.commit()
    refuse_unless_current(status, where)
    return status


__all__ = [
    "UPGRADE_HINT",
    "VERSION_TABLE",
    "SchemaStatus",
    "UpgradeResult",
    "alembic_config",
    "check_or_create",
    "describe",
    "latest_revision",
    "read_status",
    "upgrade",
]
