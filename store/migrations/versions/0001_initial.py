"""The schema as it stood when migrations began: what `create_all` made until then.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23 22:10:21.880277
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("notify_id", sa.String(length=128), nullable=True),
        sa.Column("out_trade_no", sa.String(length=64), nullable=True),
        sa.Column("trade_no", sa.String(length=64), nullable=True),
        sa.Column("trade_status", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("body", sa.String(length=16384), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_callback_attempts_notify_id", "callback_attempts", ["notify_id"])
    op.create_index("ix_callback_attempts_out_trade_no", "callback_attempts", ["out_trade_no"])
    op.create_table(
        "callback_refusals",
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("reason_hash", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sample_body", sa.String(length=16384), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "reason_hash"),
    )
    op.create_table(
        "gateway_breakers",
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway"),
    )
    op.create_table(
        "order_creations",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payable_order_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "seen_nonces",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "nonce"),
    )
    op.create_index("ix_seen_nonces_seen_at", "seen_nonces", ["seen_at"])
    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("reservation_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("superseded_by", sa.String(length=64), nullable=True),
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("qr_code", sa.String(length=500), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("flag_reason", sa.String(length=500), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["reservation_id"], ["reservations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_orders_reservation_id", "orders", ["reservation_id"])
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("trade_no", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway", "trade_no"),
    )
    op.create_index("ix_payments_order_id", "payments", ["order_id"])
    op.create_table(
        "refunds",
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("refund_no", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"]),
        sa.PrimaryKeyConstraint("gateway", "refund_no"),
        sa.UniqueConstraint("payment_id"),
    )
    op.create_index("ix_refunds_order_id", "refunds", ["order_id"])


def downgrade() -> None:
    # Indexes, constraints and keys go with their tables; those that others refer to last.
    op.drop_table("refunds")
    op.drop_table("payments")
    op.drop_table("orders")
    op.drop_table("seen_nonces")
    op.drop_table("reservations")
    op.drop_table("order_creations")
    op.drop_table("gateway_breakers")
    op.drop_table("callback_refusals")
    op.drop_table("callback_attempts")
