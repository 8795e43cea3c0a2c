"""Link ids: a random public id per subscriber, and the row id kept as legacy id.

Links name the public id; each first-release row keeps its id as ``legacy_id``.

Revision ID: 0002
Revises: 0001

Every row in the table at this point may have been named by its id in a delivered link, so
its id becomes its ``legacy_id``. ``ALTER TABLE ... ADD COLUMN`` works alike on SQLite and
PostgreSQL. The same change was schema version 2 of the old mechanism.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 1000

subscribers = sa.table(
    "subscribers",
    sa.column("id", sa.Integer),
    sa.column("public_id", sa.String),
    sa.column("legacy_id", sa.Integer),
)


def upgrade() -> None:
    op.add_column(
        "subscribers",
        sa.Column("public_id", sa.String(32), nullable=False, server_default=""),
    )
    op.add_column("subscribers", sa.Column("legacy_id", sa.Integer))
    conn = op.get_bind()
    conn.execute(sa.update(subscribers).values(legacy_id=subscribers.c.id))
    ids = conn.execute(sa.select(subscribers.c.id).order_by(subscribers.c.id)).scalars().all()
    fill = (
        sa.update(subscribers)
        .where(subscribers.c.id == sa.bindparam("row_id"))
        .values(public_id=sa.bindparam("pid"))
    )
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        # The shape of schema.new_public_id, written out: a revision never changes.
        conn.execute(fill, [{"row_id": i, "pid": "s" + secrets.token_urlsafe(12)} for i in batch])
    op.create_index("ix_subscribers_public_id", "subscribers", ["public_id"], unique=True)
    op.create_index("ix_subscribers_legacy_id", "subscribers", ["legacy_id"], unique=True)
