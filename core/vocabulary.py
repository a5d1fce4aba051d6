"""The words every layer shares: order kinds and statuses, gateway names, the events the
business's app is told of, and the ids derived from them."""

from __future__ import annotations

from enum import StrEnum


class Gateway(StrEnum):
    """The payment gateways paysaga can charge through."""

    ALIPAY = "alipay"
    WECHATPAY = "wechatpay"


# As buyers know them: the checkout page names the app to scan with.
GATEWAY_NAMES = {Gateway.ALIPAY: "Alipay", Gateway.WECHATPAY: "WeChat Pay"}


class OrderKind(StrEnum):
    BOOKING = "booking"
    RENEWAL = "renewal"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class PaymentTiming(StrEnum):
    """When an order's trade is made: with the order, or once the buyer chooses to pay."""

    IMMEDIATE = "immediate"
    # A quote first: the trade (and its QR code) only when the buyer presses Pay.
    DEFERRED = "deferred"


class EventType(StrEnum):
    """What a webhook endpoint may be told of. An order's status event comes when it takes that
    status; `order.flagged` when an order that had no flag gets one; `reservation.activated`
    when its validity goes from none or past into the future, `reservation.extended` when it
    moves later while active."""

    ORDER_CREATED = "order.created"
    ORDER_PAID = "order.paid"
    ORDER_SUPERSEDED = "order.superseded"
    ORDER_EXPIRED = "order.expired"
    ORDER_CANCELLED = "order.cancelled"
    ORDER_REFUNDED = "order.refunded"
    ORDER_FLAGGED = "order.flagged"
    RESERVATION_ACTIVATED = "reservation.activated"
    RESERVATION_EXTENDED = "reservation.extended"


def order_workflow_id(order_id: str) -> str:
    return f"order-{order_id}"


RECONCILE_WORKFLOW_ID = "paysaga-reconcile"


def recovery_workflow_id(order_id: str) -> str:
    """One at a time per order: reconciliation never recovers an order twice at once."""
    return f"recover-{order_id}"


def late_payment_workflow_id(gateway: Gateway, trade_no: str) -> str:
    """One per gateway trade: however often a late payment is notified, it is settled once."""
    return f"late-payment-{gateway}-{trade_no}"


def refund_no_for(trade_no: str) -> str:
    """One refund per trade, so its number follows from the trade: retries reuse it.

    Both gateways refund once per number (Alipay's `out_request_no`, WeChat Pay's
    `out_refund_no`, each at most 64 characters; trade numbers are 28 digits).
    """
    return f"rf_{trade_no}"


def webhook_workflow_id(endpoint_id: str, order_id: str) -> str:
    """One per endpoint and order: that order's events reach that endpoint one at a time, in the
    order they happened."""
    return f"webhooks-{endpoint_id}-{order_id}"
