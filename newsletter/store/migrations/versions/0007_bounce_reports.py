"""Bounce reports: each message of the bounce mailbox, recorded once, and what it meant.

Revision ID: 0007
Revises: 0006

- ``bounce_reports``: one row per message read from the ``[bounces] mailbox``, keyed by its
  mailbox key, with its outcome (hard, soft, refused, complaint, ignored, unmatched) and the
  delivery it named; indexed per subscriber (soft bounces counted, erasure) and per digest
  (bounce and complaint rates).

Frozen: the columns are written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_reports",
        sa.Column("message_key", sa.String(1000), primary_key=True),
        sa.Column("processed_at", sa.DateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id")),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id")),
        sa.Column("matched_by", sa.String(16)),
        sa.Column("status", sa.String(16)),
        sa.Column("diagnostic", sa.Text),
    )
    op.create_index(
        "ix_bounce_reports_subscriber",
        "bounce_reports",
        ["subscriber_id", "outcome", "processed_at"],
    )
    op.create_index("ix_bounce_reports_digest", "bounce_reports", ["digest_id", "outcome"])
