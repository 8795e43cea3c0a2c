"""The tables as the code uses them today.

Every change to them is also an Alembic revision in ``newsletter/store/migrations/versions``;
a new database is made from these definitions and stamped with the latest revision, so the
two must agree (``tests/test_migrations.py`` compares them on SQLite and PostgreSQL).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
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


def stored_text(value: str) -> str:
    """``value`` as a text column keeps it: without NUL, which PostgreSQL refuses in text.

    Removed on every engine alike (SQLite would keep it), as the message stage removes
    control characters: whatever a feed or file put into a URL or title is stored the same
    way everywhere. Code that looks rows up by a value it was given compares this form.
    """
    return value.replace("\x00", "") if "\x00" in value else value


def _without_nul(value: str | None) -> str | None:
    return None if value is None else stored_text(value)


class SafeString(TypeDecorator[str]):
    """VARCHAR(n) whose values never carry NUL (see ``stored_text``)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _without_nul(value)


class SafeText(TypeDecorator[str]):
    """TEXT whose values never carry NUL (see ``stored_text``)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return _without_nul(value)


metadata = MetaData()

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", SafeString(320), nullable=False, unique=True),  # normalized, lowercase
    Column("name", SafeString(200), nullable=False, default=""),
    Column("state", SafeString(16), nullable=False),
    Column("attrs", SafeText, nullable=False, default="{}"),  # JSON object of custom columns
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime),
    Column("unsubscribed_at", UtcDateTime),
    # What links name (revision 0002): random, never reused, kept by export/import; never a
    # row id.
    Column("public_id", SafeString(32), nullable=False, server_default=""),
    # The row id the first release put in links (revision 0002): links already delivered
    # still work, and still name the same person after an export/import. NULL for later rows.
    Column("legacy_id", Integer),
    # Why the state is what it is, when it says more than the state (revision 0006): the SMTP
    # reply of a hard bounce, "complaint" for an unsubscribe by a spam report.
    Column("state_reason", SafeText),
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
    Column("key", SafeString(600), nullable=False, unique=True),
    Column("url", SafeText),  # as long as the source gave it
    Column("title", SafeText, nullable=False),
    Column("published", UtcDateTime, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("origin", SafeText, nullable=False, default=""),
    Column("payload", SafeText, nullable=False),  # the whole Article as JSON
    Index("ix_articles_published", "published"),
)

digests = Table(
    "digests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slot", SafeString(64), unique=True),  # scheduled fire time; NULL for manual sends
    Column("subject", SafeText, nullable=False),
    Column("preheader", SafeText, nullable=False, default=""),
    Column("html", SafeText, nullable=False),  # rendered + inlined, personal fields as tokens
    Column("text", SafeText, nullable=False),
    Column("token_nonce", SafeString(64), nullable=False),
    Column("state", SafeString(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    # What the mailing is (revision 0006): "digest", or "confirmation" (double opt-in emails,
    # sent through the same outbox); lists of digests only show the digests.
    Column("kind", SafeString(16), nullable=False, server_default="digest"),
    # What the "View in browser" link in the digest names (revision 0008): random, made before
    # the digest is rendered, when its row id is not known yet. NULL for older digests.
    Column("archive_key", SafeString(32)),
    Index("ix_digests_archive_key", "archive_key", unique=True),
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
    Column("state", SafeString(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime),
    Column("last_error", SafeText),
    Column("message_id", SafeText),  # the sender's domain makes it as long as it is
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    # The sender that claimed the row (``host:pid:tag``) and when that claim lapses
    # (revision 0009): a live sender renews it, another takes the row over once it lapsed.
    Column("lease_owner", SafeText),
    Column("lease_expires_at", UtcDateTime),
    UniqueConstraint("digest_id", "subscriber_id"),
    Index("ix_deliveries_digest_state_id", "digest_id", "state", "id"),
    # One person's deliveries (revision 0006): the confirmation throttle, show and forget.
    Index("ix_deliveries_subscriber_id", "subscriber_id"),
)

locks = Table(
    "locks",
    metadata,
    Column("name", SafeString(64), primary_key=True),
    Column("owner", SafeText, nullable=False),  # host:pid:tag, host names have no fixed length
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

feed_state = Table(
    "feed_state",
    metadata,
    # 2000 characters: store/feeds.py keeps no validators for a longer URL, so the key stays
    # within every engine's index limits
    Column("url", SafeString(2000), primary_key=True),
    Column("etag", SafeText),
    Column("last_modified", SafeText),
    Column("checked_at", UtcDateTime, nullable=False),
)

slot_runs = Table(
    "slot_runs",
    metadata,
    Column("slot", SafeString(64), primary_key=True),  # a scheduled fire time, ISO 8601 UTC
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", SafeText),  # "sent digest N", "no new articles", "skipped: ...", an error
    Column("owner", SafeText, nullable=False),
)

used_tokens = Table(
    "used_tokens",
    metadata,
    Column("token_id", SafeString(100), primary_key=True),  # replay protection for one-time links
    Column("used_at", UtcDateTime, nullable=False),
)

# The operator's web app (revision 0008): accounts, their sessions, and failed-login throttles.
admin_users = Table(
    "admin_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", SafeString(64), nullable=False, unique=True),
    Column("password_hash", SafeText, nullable=False),  # argon2id, in its own encoded form
    Column("created_at", UtcDateTime, nullable=False),
)

admin_sessions = Table(
    "admin_sessions",
    metadata,
    # SHA-256 of the random token in the cookie: the table alone opens no session
    Column("token_hash", SafeString(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("admin_users.id"), nullable=False),
    Column("csrf_token", SafeString(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_admin_sessions_user_id", "user_id"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("key", SafeString(200), primary_key=True),  # "user:<name>", "client:<address>", ...
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", UtcDateTime, nullable=False),
    Column("blocked_until", UtcDateTime, nullable=False),
)

# Addresses that must not be made active again by an import or ``add`` (revision 0006): a
# keyed hash of the normalized address, never the address (see subscribers/suppression.py).
suppressions = Table(
    "suppressions",
    metadata,
    Column("address_hash", SafeString(64), primary_key=True),
    Column("reason", SafeString(16), nullable=False),  # bounced, complained, forgotten
    Column("suppressed_at", UtcDateTime, nullable=False),
)

# Sign-up requests from the public form and API, queued as they arrive (revision 0006): the
# request only records them; the confirmation queue decides and mails (app/confirmations.py).
signup_requests = Table(
    "signup_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", SafeString(320), nullable=False),  # normalized
    Column("name", SafeString(200), nullable=False, default=""),
    Column("requested_at", UtcDateTime, nullable=False),
)

# Each message read from the bounce mailbox, recorded once under its mailbox key before it is
# marked done there (revision 0007): what it meant and which delivery it named. Soft bounces
# are counted and bounce and complaint rates computed from these rows; ``subscribers forget``
# deletes a person's rows.
bounce_reports = Table(
    "bounce_reports",
    metadata,
    Column("message_key", SafeString(1000), primary_key=True),  # maildir:NAME, imap:FOLDER:...
    Column("processed_at", UtcDateTime, nullable=False),
    # hard, soft, refused, complaint, ignored, or unmatched (a report naming no delivery)
    Column("outcome", SafeString(16), nullable=False),
    Column("digest_id", Integer, ForeignKey("digests.id")),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id")),
    Column("matched_by", SafeString(16)),  # verp, message-id or recipient
    Column("status", SafeString(16)),  # the RFC 3463 code, "5.1.1"
    Column("diagnostic", SafeText),  # the remote server's words (only for a matched report)
    Index("ix_bounce_reports_subscriber", "subscriber_id", "outcome", "processed_at"),
    Index("ix_bounce_reports_digest", "digest_id", "outcome"),
)
