"""What the sandbox shows of its trades and money over its own JSON endpoints.

Both halves show their trades in one shape, so a test or a demo reads them one way: the
gateway's trade number (Alipay's `trade_no`, WeChat Pay's `transaction_id`), its state in the
gateway's own words, yuan amounts, China wall-clock times, and the refunds whose money went back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from sandbox.china_time import wall_time
from sandbox.money import yuan
from sandbox.notifier import Delivery, TradeEvent

GatewayName = Literal["alipay", "wechatpay"]


@dataclass(frozen=True)
class RefundSummary:
    """A refund whose money went back to the buyer, under the merchant's refund number."""

    out_request_no: str
    amount: Decimal
    refunded_at: datetime


@dataclass(frozen=True)
class TradeSummary:
    """One trade as either half describes it to the views."""

    gateway: GatewayName
    out_trade_no: str
    trade_no: str | None
    status: str | None
    subject: str
    total: Decimal
    paid: bool
    expires_at: datetime
    refunds: tuple[RefundSummary, ...]

    @property
    def refunded(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal("0.00"))


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
    gateway: GatewayName
    out_trade_no: str
    # None until the gateway has a trade: an Alipay QR code nobody scanned, an unpaid WeChat
    # Pay order (its transaction_id comes with the payment).
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
    gateway: GatewayName
    out_trade_no: str
    captured: str
    refunded: str


class Ledger(BaseModel):
    """Money as the gateways saw it move: what buyers paid and what went back to them."""

    trades: list[LedgerLine]
    captured: str
    refunded: str
    net: str


def trade_view(trade: TradeSummary, deliveries: list[Delivery]) -> TradeView:
    return TradeView(
        gateway=trade.gateway,
        out_trade_no=trade.out_trade_no,
        trade_no=trade.trade_no,
        status=trade.status,
        subject=trade.subject,
        total_amount=yuan(trade.total),
        refunded_amount=yuan(trade.refunded),
        # Every trade the sandbox holds began as a QR code made for the merchant.
        precreated=True,
        expires_at=wall_time(trade.expires_at),
        refunds=[
            RefundView(
                out_request_no=refund.out_request_no,
                refund_amount=yuan(refund.amount),
                refunded_at=wall_time(refund.refunded_at),
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


def ledger(trades: list[TradeSummary]) -> Ledger:
    paid = [trade for trade in trades if trade.paid]
    captured = sum((trade.total for trade in paid), Decimal("0.00"))
    refunded = sum((trade.refunded for trade in paid), Decimal("0.00"))
    return Ledger(
        trades=[
            LedgerLine(
                gateway=trade.gateway,
                out_trade_no=trade.out_trade_no,
                captured=yuan(trade.total),
                refunded=yuan(trade.refunded),
            )
            for trade in paid
        ],
        captured=yuan(captured),
        refunded=yuan(refunded),
        net=yuan(captured - refunded),
    )
