"""The first release's schema (0.1.0).

Exactly what its ``metadata.create_all()`` made.

Revision ID: 0001
Revises: (none)

Frozen: the columns are written out here, never taken from ``schema.py``, which moves on.
A database the first release wrote has these tables and a ``schema_version`` row 1; it is
stamped with this revision before its upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("applied_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attrs", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("confirmed_at", sa.DateTime),
        sa.Column("unsubscribed_at", sa.DateTime),
    )
    op.create_index("ix_subscribers_state_id", "subscribers", ["state", "id"])
    op.create_table(
        "articles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(600), nullable=False, unique=True),
        sa.Column("url", sa.String(2000)),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("published", sa.DateTime, nullable=False),
        sa.Column("first_seen", sa.DateTime, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_articles_published", "articles", ["published"])
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("slot", sa.String(64), unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("preheader", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("token_nonce", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_table(
        "digest_articles",
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id"), nullable=False),
        sa.Column(
            "article_id", sa.Integer, sa.ForeignKey("articles.id"), nullable=False, unique=True
        ),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id"), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("message_id", sa.String(300)),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.UniqueConstraint("digest_id", "subscriber_id"),
    )
    op.create_index("ix_deliveries_digest_state_id", "deliveries", ["digest_id", "state", "id"])
    op.create_table(
        "locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "feed_state",
        sa.Column("url", sa.String(2000), primary_key=True),
        sa.Column("etag", sa.Text),
        sa.Column("last_modified", sa.Text),
        sa.Column("checked_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "slot_runs",
        sa.Column("slot", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("outcome", sa.Text),
        sa.Column("owner", sa.String(200), nullable=False),
    )
    op.create_table(
        "used_tokens",
        sa.Column("token_id", sa.String(100), primary_key=True),
        sa.Column("used_at", sa.DateTime, nullable=False),
    )
