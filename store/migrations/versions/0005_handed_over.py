"""Payments handed over: when a notification's saga was told of its payment, so that repeats
of the notification are not handed over again. Payments recorded before have none, and a
repeat of an undecided one is handed over once more, as before.

Revision ID: 0005_handed_over
Revises: 0004_webhooks
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005_handed_over"
down_revision: str | None = "0004_webhooks"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_over_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("handed_over_at")
