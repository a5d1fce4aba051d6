"""Orders and reservations as the business's app sees them: the API's answers and the payloads
of the events it is sent. Amounts are strings with two decimals ("29.70")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from core.vocabulary import EventType, Gateway, OrderKind, OrderStatus, PaymentTiming


class PaymentPublic(BaseModel):
    trade_no: str
    amount: str
    status: str
    paid_at: datetime | None


class RefundPublic(BaseModel):
    refund_no: str
    trade_no: str
    amount: str
    status: str


class OrderPublic(BaseModel):
    order_id: str
    reservation_id: str
    kind: OrderKind
    status: OrderStatus
    status_reason: str | None
    amount: str
    currency: str
    gateway: Gateway
    # When its trade is made: with the order, or (deferred) when the buyer presses Pay.
    payment: PaymentTiming
    # What the buyer scans: Alipay's qr_code, WeChat Pay's code_url. None for a deferred order
    # until the buyer chooses to pay.
    qr_code: str | None
    # Pending: when it can no longer be paid (a deferred order without a trade: when its quote
    # lapses).
    expires_at: datetime
    created_at: datetime
    flagged: str | None
    # The hosted page to send the buyer to (None for orders made before pages existed), and
    # where that page sends the buyer once paid.
    checkout_url: str | None
    return_url: str | None
    payments: list[PaymentPublic]
    refunds: list[RefundPublic]


class OrderSummary(BaseModel):
    order_id: str
    kind: OrderKind
    status: OrderStatus
    amount: str
    created_at: datetime


class ReservationPublic(BaseModel):
    reservation_id: str
    status: Literal["new", "active", "lapsed"]
    valid_until: datetime | None
    payable_order_id: str | None
    orders: list[OrderSummary]


class EventPublic(BaseModel):
    """What a webhook endpoint is sent: the event, and its order (or reservation) exactly as
    `GET /v1/orders/{id}` (`GET /v1/reservations/{id}`) answered right after it happened."""

    id: str
    type: EventType
    timestamp: datetime
    data: OrderPublic | ReservationPublic
