"""Tables and registered migrations."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the backend stores."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", UtcDateTime, nullable=False),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # normalized, lowercase
    Column("name", String(200), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("attrs", Text, nullable=False, default="{}"),  # JSON object of custom columns
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("unsubscribed_at", UtcDateTime),
    # What links name (v2): random, never reused, carried by export/import. Never a row id.
    Column("public_id", String(32), nullable=False, server_default=""),
    # The row id the first release put in links (v2): links already delivered still work,
    # and still name the same person after an export/import. NULL for later subscribers.
    Column("legacy_id", Integer),
    Index("ix_subscribers_state_id", "state", "id"),
    Index("ix_subscribers_public_id", "public_id", unique=True),
    Index("ix_subscribers_legacy_id", "legacy_id", unique=True),
)

PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{8,32}")


def new_public_id() -> str:
    """A fresh random public id (97 bits); it starts with a letter, so it is never a number."""
    return "s" + secrets.token_urlsafe(12)


def is_public_id(value: str) -> bool:
    """The shape of a public id (ours or one carried in from an export); never all digits."""
    return PUBLIC_ID.fullmatch(value) is not None and not value.isdigit()


_LEGACY_ID = re.compile(r"[1-9][0-9]{0,9}")
MAX_LEGACY_ID = 2**31 - 1  # the first release's ids were INTEGER: 32 bits on PostgreSQL


def legacy_id_from(text: str) -> int | None:
    """A first-release row id written as canonical digits, or None for anything else."""
    if not _LEGACY_ID.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_LEGACY_ID else None


articles = Table(
    "articles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(600), nullable=False, unique=True),
    Column("url", String(2000)),
    Column("title", Text, nullable=False),
    Column("published", UtcDateTime, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("origin", Text, nullable=False, default=""),
    Column("payload", Text, nullable=False),  # the whole Article as JSON
    Index("ix_articles_published", "published"),
)

digests = Table(
    "digests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slot", String(64), unique=True),  # scheduled fire time; NULL for manual sends
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False, default=""),
    Column("html", Text, nullable=False),  # rendered + inlined, personal fields as tokens
    Column("text", Text, nullable=False),
    Column("token_nonce", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
)

digest_articles = Table(
    "digest_articles",
    metadata,
    Column("digest_id", Integer, ForeignKey("digests.id"), nullable=False),
    # unique: the database itself refuses to put one article into two digests
    Column("article_id", Integer, ForeignKey("articles.id"), nullable=False, unique=True),
    Column("position", Integer, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest_id", Integer, ForeignKey("digests.id"), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime),
    Column("last_error", Text),
    Column("message_id", String(300)),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    UniqueConstraint("digest_id", "subscriber_id"),
    Index("ix_deliveries_digest_state_id", "digest_id", "state", "id"),
)

locks = Table(
    "locks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

feed_state = Table(
    "feed_state",
    metadata,
    Column("url", String(2000), primary_key=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("checked_at", UtcDateTime, nullable=False),
)

slot_runs = Table(
    "slot_runs",
    metadata,
    Column("slot", String(64), primary_key=True),  # a scheduled fire time, ISO 8601 UTC
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", Text),  # "sent digest N", "no new articles", "skipped: ...", an error
    Column("owner", String(200), nullable=False),
)

used_tokens = Table(
    "used_tokens",
    metadata,
    Column("token_id", String(100), primary_key=True),  # replay protection for one-time links
    Column("used_at", UtcDateTime, nullable=False),
)


def _v1_initial(conn: Connection) -> None:
    metadata.create_all(conn)


_BACKFILL_BATCH = 1000


def _v2_public_ids(conn: Connection) -> None:
    """Public ids for links, and each existing row's id kept as its ``legacy_id``.

    Idempotent: on a database that ``_v1_initial`` created from today's tables the columns
    exist already and only the missing parts are done. Plain ``ALTER TABLE ... ADD COLUMN``
    works the same on SQLite and PostgreSQL.
    """
    table = subscribers
    columns = {column["name"] for column in inspect(conn).get_columns(table.name)}
    if "public_id" not in columns:
        conn.execute(
            text("ALTER TABLE subscribers ADD COLUMN public_id VARCHAR(32) DEFAULT '' NOT NULL")
        )
    if "legacy_id" not in columns:
        conn.execute(text("ALTER TABLE subscribers ADD COLUMN legacy_id INTEGER"))
        # Every row now in the table may have been named by its id in a delivered link.
        conn.execute(update(table).values(legacy_id=table.c.id))
    missing = conn.execute(select(table.c.id).where(table.c.public_id == "")).scalars().all()
    fill = update(table).where(table.c.id == bindparam("row_id")).values(public_id=bindparam("pid"))
    for start in range(0, len(missing), _BACKFILL_BATCH):
        batch = missing[start : start + _BACKFILL_BATCH]
        conn.execute(fill, [{"row_id": row_id, "pid": new_public_id()} for row_id in batch])
    for index in table.indexes:
        index.create(conn, checkfirst=True)


# Append new migrations here; never edit one that has shipped.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1_initial),
    (2, _v2_public_ids),
]


def migrate(conn: Connection, now: datetime) -> None:
    """Apply every registered migration newer than the database's version."""
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(
        select(schema_version.c.version).order_by(schema_version.c.version.desc())
    ).scalar()
    for version, step in MIGRATIONS:
        if current is None or version > current:
            step(conn)
            conn.execute(schema_version.insert().values(version=version, applied_at=now))
