"""Opening the database and running transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from newsletter.errors import StoreError
from newsletter.store.schema import migrate


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a send writes; NORMAL is durable across process crashes
    # (only an OS crash can lose the last commits) and keeps per-batch commits cheap.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_WRITE_PROBLEMS = ("readonly", "read-only", "unable to open database file")


def _describe(where: str, exc: OperationalError) -> str:
    """One line: which database, what the driver said, and what to check for a write problem."""
    message = f"database {where}: {exc.orig}"
    if any(problem in str(exc.orig).lower() for problem in _WRITE_PROBLEMS):
        message += " (check that the file and its folder are writable by this user)"
    return message


def _where(engine: Engine) -> str:
    """The database for messages: a SQLite file's path, else the URL without its password."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return url.database.removeprefix("file:")
    return url.render_as_string(hide_password=True)


class Store:
    """A database handle. ``atomic()`` yields a connection inside one committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.where = _where(engine)

    @classmethod
    def open(cls, url: str, *, now: datetime | None = None) -> Store:
        """Open (creating and migrating if needed) the database at a SQLAlchemy URL."""
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
        try:
            engine = create_engine(parsed)
        except ImportError as exc:
            raise StoreError(
                f"[store] url: {parsed.render_as_string(hide_password=True)} needs a database "
                f"driver that is not installed ({exc}); install it into the same environment"
            ) from None
        except ArgumentError as exc:
            raise StoreError(
                f"[store] url: cannot use {parsed.render_as_string(hide_password=True)}: {exc}"
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        try:
            with store.atomic() as conn:
                migrate(conn, now or datetime.now(UTC))
        except StoreError as exc:  # from atomic(): names the database already
            raise StoreError(f"cannot open {exc}") from None
        return store

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(_describe(self.where, exc)) from exc

    def close(self) -> None:
        self.engine.dispose()


__all__ = ["SQLAlchemyError", "Store"]
