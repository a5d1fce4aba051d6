"""Orders keep until when their trade takes payments, so that reconciliation, ending an order
whose saga was lost, can ask the gateway once more when the trade can no longer be paid.
Orders made before have none, and are ended as before.

Revision ID: 0006_payable_until
Revises: 0005_handed_over
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006_payable_until"
down_revision: str | None = "0005_handed_over"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payable_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("payable_until")
