"""Checkout pages and deferred payment: how an order is paid, its page's token, its return URL.

Revision ID: 0003_checkout
Revises: 0002_operators
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_checkout"
down_revision: str | None = "0002_operators"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        # Every order made before had its trade made with it.
        batch_op.add_column(
            sa.Column("payment", sa.String(length=16), nullable=False, server_default="immediate")
        )
        batch_op.add_column(sa.Column("checkout_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("return_url", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("return_url")
        batch_op.drop_column("checkout_token")
        batch_op.drop_column("payment")
