"""The words every layer shares: order kinds and statuses, gateway names, and the ids derived
from them."""

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
