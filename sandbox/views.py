"""What the sandbox shows of its trades and money over its own JSON endpoints."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from gateways.alipay_formats import format_amount, format_time
from sandbox.amounts import format_sum
from sandbox.notifier import Delivery
from sandbox.trades import Trade, TradeEvent


class RefundView(BaseModel):
    out_request_no: str
    refund_amount: str
    refunded_at: str


class NotificationView(BaseModel):
    notify_id: str
    kind: TradeEvent
    attempts: int
    delivered: bool
    lost: bool
    last_status: str | None


class TradeView(BaseModel):
    out_trade_no: str
    # None until the buyer scans: before that Alipay has no trade, only a QR code.
    trade_no: str | None
    status: str | None
    subject: str
    total_amount: str
    refunded_amount: str
    precreated: bool
    expires_at: str
    refunds: list[RefundView]
    notifications: list[NotificationView]


class LedgerLine(BaseModel):
    out_trade_no: str
    captured: str
    refunded: str


class Ledger(BaseModel):
    """Money as the gateway saw it move: what buyers paid and what went back to them."""

    trades: list[LedgerLine]
    captured: str
    refunded: str
    net: str


def trade_view(trade: Trade, deliveries: list[Delivery]) -> TradeView:
    return TradeView(
        out_trade_no=trade.out_trade_no,
        trade_no=trade.scan.trade_no if trade.scan is not None else None,
        status=trade.status,
        subject=trade.subject,
        total_amount=format_amount(trade.total_amount),
        refunded_amount=format_sum(trade.refunded_amount),
        precreated=True,
        expires_at=format_time(trade.expires_at),
        refunds=[
            RefundView(
                out_request_no=refund.out_request_no,
                refund_amount=format_amount(refund.amount),
                refunded_at=format_time(refund.refunded_at),
            )
            for refund in trade.refunds
        ],
        notifications=[
            NotificationView(
                notify_id=delivery.notify_id,
                kind=delivery.kind,
                attempts=delivery.attempts,
                delivered=delivery.delivered,
                lost=delivery.lost,
                last_status=delivery.last_status,
            )
            for delivery in deliveries
        ],
    )


def ledger(trades: list[Trade]) -> Ledger:
    paid = [trade for trade in trades if trade.paid_at is not None]
    captured = sum((trade.total_amount for trade in paid), Decimal("0.00"))
    refunded = sum((trade.refunded_amount for trade in paid), Decimal("0.00"))
    return Ledger(
        trades=[
            LedgerLine(
                out_trade_no=trade.out_trade_no,
                captured=format_amount(trade.total_amount),
                refunded=format_sum(trade.refunded_amount),
            )
            for trade in paid
        ],
        captured=format_sum(captured),
        refunded=format_sum(refunded),
        net=format_sum(captured - refunded),
    )
