"""Database rows as the business's app sees them: in the API's answers and in its events."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlmodel import Session

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
from store.models import Order, Reservation


def checkout_url(order: Order, public_base_url: str) -> str | None:
    """The order's hosted checkout page; its token, not the order id, is what opens it."""
    if order.checkout_token is None:
        return None
    return f"{public_base_url.rstrip('/')}/pay/{order.id}?token={order.checkout_token}"


def opens_checkout(order: Order, token: str) -> bool:
    """Whether `token` is the order's checkout token, compared in constant time."""
    if order.checkout_token is None:
        return False
    return secrets.compare_digest(token.encode(), order.checkout_token.encode())


def order_public(session: Session, order: Order, *, public_base_url: str) -> OrderPublic:
    return OrderPublic(
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
        checkout_url=checkout_url(order, public_base_url),
        return_url=order.return_url,
        payments=[
            PaymentPublic(
                trade_no=payment.trade_no,
                amount=format_amount(payment.amount_cents),
                status=payment.status,
                paid_at=payment.paid_at,
            )
            for payment in orders.payments_of(session, order.id)
        ],
        refunds=[
            RefundPublic(
                refund_no=refund.refund_no,
                trade_no=orders.trade_of_refund(session, refund),
                amount=format_amount(refund.amount_cents),
                status=refund.status,
            )
            for refund in orders.refunds_of(session, order.id)
        ],
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
