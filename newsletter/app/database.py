"""The database's schema revision: where it stands, and bringing it to the latest."""

from __future__ import annotations

from datetime import datetime

from newsletter.config import Settings
from newsletter.store.database import schema_status, upgrade_database
from newsletter.store.migrations import UPGRADE_HINT, SchemaStatus, UpgradeResult, describe


def database_status(settings: Settings) -> tuple[str, SchemaStatus]:
    """The database (for messages) and its revision against the latest this code knows."""
    return schema_status(settings.store.url)


def upgrade(settings: Settings, *, now: datetime) -> tuple[str, UpgradeResult]:
    """Run the missing revisions (a new database is created); a SQLite file is copied first."""
    return upgrade_database(settings.store.url, now=now)


def describe_revision(revision: str | None) -> str:
    """``0002 (Link ids: ...)``: a revision and the first line of what it does."""
    return describe(revision)


__all__ = [
    "UPGRADE_HINT",
    "SchemaStatus",
    "UpgradeResult",
    "database_status",
    "describe_revision",
    "upgrade",
]
