"""Delivery leases: who claimed a row in sending, and until when.

Revision ID: 0009
Revises: 0008

Several senders (``newsletter worker`` processes, ``send-now``) can share one digest's
outbox. A row moved to ``sending`` names its sender (``lease_owner``, ``host:pid:tag``) and
the time its claim lapses (``lease_expires_at``); a live sender renews it, and the row of a
sender that died is taken over once the lease has lapsed. Rows already in the table keep
NULL in both: a row left in ``sending`` by an older release counts as abandoned.

Frozen: the columns are written out here, never taken from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_owner", sa.Text))
    op.add_column("deliveries", sa.Column("lease_expires_at", sa.DateTime))
