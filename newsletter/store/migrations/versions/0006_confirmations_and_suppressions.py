"""Confirmation emails through the outbox, sign-up requests queued, a suppression list.

Revision ID: 0006
Revises: 0005

- ``digests.kind``: a mailing is a ``digest`` (every existing row) or a ``confirmation``
  (double opt-in emails, delivered by the same outbox).
- ``subscribers.state_reason``: why an address bounced or left, when that says more.
- ``deliveries`` indexed by subscriber: one person's deliveries are looked up by the
  confirmation throttle, ``subscribers show`` and ``subscribers forget``.
- ``suppressions``: keyed hashes of addresses that bounced, complained or were forgotten.
- ``signup_requests``: the public sign-up queue.

Frozen: the columns are written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "digests", sa.Column("kind", sa.String(16), nullable=False, server_default="digest")
    )
    op.add_column("subscribers", sa.Column("state_reason", sa.Text))
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])
    op.create_table(
        "suppressions",
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("suppressed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "signup_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime, nullable=False),
    )
