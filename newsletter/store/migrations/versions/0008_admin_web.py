"""The operator's web app: admin accounts, sessions, login throttles, archive keys.

Revision ID: 0008
Revises: 0007

Three new tables (``admin_users``, ``admin_sessions``, ``login_failures``) and a nullable
``digests.archive_key``: the random key the "View in browser" link of a digest names. Digests
sent before have none; their archive pages stay reachable by id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Written out as they are today: a revision never changes with the code.
_UTC = sa.DateTime()


def upgrade() -> None:
    with op.batch_alter_table("digests") as batch:
        batch.add_column(sa.Column("archive_key", sa.String(32), nullable=True))
        batch.create_index("ix_digests_archive_key", ["archive_key"], unique=True)
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("admin_users.id"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("expires_at", _UTC, nullable=False),
    )
    op.create_index("ix_admin_sessions_user_id", "admin_sessions", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", _UTC, nullable=False),
        sa.Column("blocked_until", _UTC, nullable=False),
    )
