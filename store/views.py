"""Database rows as the business's app sees them: in the API's answers and in its events."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session, col

from core.money import format_amount
from core.public import (
    OrderPublic,
    OrderSummary,
    PaymentPublic,
    RefundPublic,
    ReservationPublic,
)
from core.vocabulary import Gateway, OrderKind, OrderStatus, PaymentTiming
from store import orders
from store.models import Order, Payment, Refund, Reservation


def _checkout_url(order_id: str, checkout_token: str | None, public_base_url: str) -> str | None:
    """The order's hosted checkout page; its token, not the order id, is what opens it."""
    if checkout_token is None:
        return None
    return f"{public_base_url.rstrip('/')}/pay/{order_id}?token={checkout_token}"


def opens_checkout(order: Order, token: str) -> bool:
    """Whether `token` is the order's checkout token, compared in constant time."""
    if order.checkout_token is None:
        return False
    return secrets.compare_digest(token.encode(), order.checkout_token.encode())


@dataclass(frozen=True)
class ShownOrder:
    """An order as the API shows it, with the fingerprint of the request that made it, which a
    POST with the same Idempotency-Key is compared with."""

    public: OrderPublic
    request_fingerprint: str


def shown_order(
    connection: Connection, order_id: str, *, public_base_url: str
) -> ShownOrder | None:
    """The order as `GET /v1/orders/{id}` answers it, or None if there is none.

    Every answer about an order and every event of one reads it, the app's polls most of all:
    one plain statement, its payments and their refunds joined in, and no ORM bookkeeping.
    Within a transaction, read it once that transaction's changes are flushed."""
    rows = connection.execute(_SHOWN, {"order_id": order_id}).all()
    if not rows:
        return None
    order = rows[0]
    # One row per payment (a trade has at most one refund), or one row without any.
    paid = [row for row in rows if row.trade_no is not None]
    refunded = sorted(
        (row for row in paid if row.refund_no is not None), key=lambda row: row.refund_created_at
    )
    public = OrderPublic(
        order_id=order.id,
        reservation_id=order.reservation_id,
        kind=OrderKind(order.kind),
        status=OrderStatus(order.status),
        status_reason=order.status_reason,
        amount=format_amount(order.amount_cents),
        currency=order.currency,
        gateway=Gateway(order.gateway),
        payment=PaymentTiming(order.payment),
        qr_code=order.qr_code,
        expires_at=order.expires_at,
        created_at=order.created_at,
        flagged=order.flag_reason,
        checkout_url=_checkout_url(order.id, order.checkout_token, public_base_url),
        return_url=order.return_url,
        payments=[
            PaymentPublic(
                trade_no=row.trade_no,
                amount=format_amount(row.payment_cents),
                status=row.payment_status,
                paid_at=row.paid_at,
            )
            for row in paid
        ],
        refunds=[
            RefundPublic(
                refund_no=row.refund_no,
                trade_no=row.trade_no,
                amount=format_amount(row.refund_cents),
                status=row.refund_status,
            )
            for row in refunded
        ],
    )
    return ShownOrder(public, order.request_fingerprint)


_SHOWN = (
    select(
        col(Order.id),
        col(Order.reservation_id),
        col(Order.kind),
        col(Order.status),
        col(Order.status_reason),
        col(Order.amount_cents),
        col(Order.currency),
        col(Order.gateway),
        col(Order.payment),
        col(Order.qr_code),
        col(Order.expires_at),
        col(Order.created_at),
        col(Order.flag_reason),
        col(Order.checkout_token),
        col(Order.return_url),
        col(Order.request_fingerprint),
        col(Payment.trade_no),
        col(Payment.amount_cents).label("payment_cents"),
        col(Payment.status).label("payment_status"),
        col(Payment.paid_at),
        col(Refund.refund_no),
        col(Refund.amount_cents).label("refund_cents"),
        col(Refund.status).label("refund_status"),
        col(Refund.created_at).label("refund_created_at"),
    )
    .outerjoin(Payment, col(Payment.order_id) == col(Order.id))
    .outerjoin(Refund, col(Refund.payment_id) == col(Payment.id))
    .where(col(Order.id) == bindparam("order_id"))
    .order_by(col(Payment.id))
)


def reservation_public(
    session: Session, reservation: Reservation, now: datetime
) -> ReservationPublic:
    if reservation.valid_until is None:
        status = "new"
    elif orders.is_active(reservation, now):
        status = "active"
    else:
        status = "lapsed"
    return ReservationPublic(
        reservation_id=reservation.id,
        status=status,
        valid_until=reservation.valid_until,
        payable_order_id=reservation.payable_order_id,
        orders=[
            OrderSummary(
                order_id=order.id,
                kind=OrderKind(order.kind),
                status=OrderStatus(order.status),
                amount=format_amount(order.amount_cents),
                created_at=order.created_at,
            )
            for order in orders.orders_of(session, reservation.id)
        ],
    )
