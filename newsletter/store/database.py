"""Opening the database and running transactions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from newsletter.errors import StoreError
from newsletter.store import migrations
from newsletter.store.migrations import SchemaStatus, UpgradeResult


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a send writes; NORMAL is durable across process crashes
    # (only an OS crash can lose the last commits) and keeps per-batch commits cheap.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_PSYCOPG = "postgresql+psycopg"  # the driver the postgres extra installs
_WRITE_PROBLEMS = ("readonly", "read-only", "unable to open database file")


def _describe(where: str, exc: OperationalError) -> str:
    """One line: which database, what the driver said, and what to check for a write problem."""
    said = " ".join(str(exc.orig).split())  # psycopg adds a tab-indented hint line
    message = f"database {where}: {said}"
    if any(problem in str(exc.orig).lower() for problem in _WRITE_PROBLEMS):
        message += " (check that the file and its folder are writable by this user)"
    return message


def _where(engine: Engine) -> str:
    """The database for messages: a SQLite file's path, else the URL without its password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database.removeprefix("file:")
    return url.render_as_string(hide_password=True)


def connect(url: str) -> Engine:
    """An engine for a SQLAlchemy URL (a SQLite file's folder is made); nothing is read yet."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"[store] url: {url!r} is not a database URL (e.g. sqlite:///var/newsletter.db)"
        ) from None
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not parsed.database.startswith("file:")  # a URI (?uri=true): opened as given
    ):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # On PostgreSQL each session names its process, so an operator (or a test) can tell in
    # pg_stat_activity which process holds what.
    connect_args = (
        {"application_name": f"newsletter pid {os.getpid()}"}
        if parsed.get_backend_name() == "postgresql"
        else {}
    )
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except ImportError as exc:
        extra = " (pip install 'newsletter[postgres]')" if parsed.drivername == _PSYCOPG else ""
        raise StoreError(
            f"[store] url: {parsed.render_as_string(hide_password=True)} needs a database "
            f"driver that is not installed ({exc}); install it into the same environment{extra}"
        ) from None
    except ArgumentError as exc:
        raise StoreError(
            f"[store] url: cannot use {parsed.render_as_string(hide_password=True)}: {exc}"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@contextmanager
def _described(where: str) -> Iterator[None]:
    """A driver's OperationalError (cannot connect, read-only file, ...) as one StoreError line."""
    try:
        yield
    except OperationalError as exc:
        raise StoreError(f"cannot open {_describe(where, exc)}") from None


def schema_status(url: str) -> tuple[str, SchemaStatus]:
    """Where the database at ``url`` is, and its schema revision against the latest."""
    engine = connect(url)
    where = _where(engine)
    try:
        with _described(where), engine.connect() as conn:
            return where, migrations.read_status(conn, where)
    finally:
        engine.dispose()


def upgrade_database(url: str, *, now: datetime) -> tuple[str, UpgradeResult]:
    """Bring the database at ``url`` to the latest schema revision (a new one is created).

    A SQLite file is copied beside itself first (``UpgradeResult.backup``). One transaction:
    a failed revision leaves the database as it was.
    """
    engine = connect(url)
    where = _where(engine)
    try:
        with _described(where), engine.connect() as conn:
            result = migrations.upgrade(conn, where, now=now)
            conn.commit()
        return where, result
    finally:
        engine.dispose()


class Store:
    """A database handle. ``atomic()`` yields a connection inside one committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.where = _where(engine)

    @classmethod
    def open(cls, url: str) -> Store:
        """Open the database at a SQLAlchemy URL; a new, empty one is made at the latest schema.

        A database behind the code's schema (or ahead of it) is refused with a StoreError
        that says to run ``newsletter db upgrade`` (or to upgrade newsletter).
        """
        store = cls(connect(url))
        try:
            with _described(store.where):
                migrations.check_or_create(store.engine, store.where)
        except StoreError:
            store.close()
            raise
        return store

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(_describe(self.where, exc)) from exc

    @contextmanager
    def atomic_on(self, conn: Connection) -> Iterator[Connection]:
        """Like ``atomic``, on a connection the caller keeps open between transactions."""
        try:
            with conn.begin():
                yield conn
        except OperationalError as exc:
            raise StoreError(_describe(self.where, exc)) from exc

    def close(self) -> None:
        self.engine.dispose()


__all__ = ["SQLAlchemyError", "Store"]
