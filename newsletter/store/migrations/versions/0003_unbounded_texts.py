"""Unbounded texts: article URLs, Message-IDs and lock and slot owners.

Columns whose values have no length limit of ours become TEXT.

Revision ID: 0003
Revises: 0002

An article URL (2000), a Message-ID with a long sender domain (300) and a lock or slot
owner's ``host:pid:tag`` (200) could outgrow their VARCHAR on PostgreSQL, where the insert
then fails; SQLite never enforced the lengths. Only PostgreSQL's columns change: on SQLite
VARCHAR(n) and TEXT are the same type.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WIDENED = [
    ("articles", "url", 2000, True),
    ("deliveries", "message_id", 300, True),
    ("locks", "owner", 200, False),
    ("slot_runs", "owner", 200, False),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, length, nullable in _WIDENED:
        op.alter_column(
            table,
            column,
            type_=sa.Text(),
            existing_type=sa.String(length),
            existing_nullable=nullable,
        )
