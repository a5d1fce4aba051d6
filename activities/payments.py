"""Gateway activities, the same for every gateway: each order's trade is reached through the
gateway it was created on. Each call is idempotent by a key the gateway honours: the order's
`out_trade_no` for creating, querying and closing its trade, the refund's number for refunds.

A gateway's final refusal becomes a non-retryable ApplicationError carrying the refusal's
type name; a transient failure is raised as is, for Temporal to retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.contracts import PaymentNotice, PaymentRequest, RefundOrder, TradeCheck, TradeRef
from core.vocabulary import Gateway
from gateways.errors import GatewayRejected, TradeAlreadyPaid, TradeNotFound, TradeStatusError
from gateways.gateway import PaymentGateway

T = TypeVar("T")


class RefundNotConfirmed(Exception):
    """The gateway has not (yet) confirmed a refund: retried until it does."""


class PaymentActivities:
    def __init__(self, gateways: Mapping[Gateway, PaymentGateway]) -> None:
        self._gateways = gateways

    @activity.defn
    async def create_payment(self, request: PaymentRequest) -> str:
        """The QR code of the order's trade; asking again answers the same one."""
        return await _final(
            self._gateway(request.gateway).create_qr_payment(
                out_trade_no=request.order_id,
                amount_cents=request.amount_cents,
                subject=request.subject,
                expires_at=request.expires_at,
                notify_url=request.notify_url,
            )
        )

    @activity.defn
    async def check_trade(self, trade: TradeRef) -> TradeCheck:
        try:
            state = await self._gateway(trade.gateway).query(out_trade_no=trade.order_id)
        except TradeNotFound:
            # Nothing to pay at the gateway (for Alipay: the QR code was never scanned).
            return TradeCheck(payment=None)
        except GatewayRejected as refusal:
            raise _non_retryable(refusal) from refusal
        if not state.paid or state.trade_no is None:
            return TradeCheck(payment=None)
        return TradeCheck(
            payment=PaymentNotice(
                gateway=trade.gateway,
                order_id=trade.order_id,
                trade_no=state.trade_no,
                amount_cents=state.amount_cents,
                paid_at=state.paid_at,
            )
        )

    @activity.defn
    async def close_trade(self, trade: TradeRef) -> TradeCheck:
        """Close the trade so it can no longer be paid; if it was paid first, say so."""
        try:
            await self._gateway(trade.gateway).close(out_trade_no=trade.order_id)
        except TradeNotFound:
            return TradeCheck(payment=None)
        except (TradeStatusError, TradeAlreadyPaid):
            # A trade that refuses to close may have been paid: the payment won the race.
            return await self.check_trade(trade)
        except GatewayRejected as refusal:
            raise _non_retryable(refusal) from refusal
        return TradeCheck(payment=None)

    @activity.defn
    async def refund_payment(self, refund: RefundOrder) -> None:
        await _final(
            self._gateway(refund.gateway).refund(
                out_trade_no=refund.order_id,
                trade_no=refund.trade_no,
                refund_no=refund.refund_no,
                # paysaga refunds whole payments only.
                amount_cents=refund.amount_cents,
                total_cents=refund.amount_cents,
            )
        )

    @activity.defn
    async def confirm_refund(self, refund: RefundOrder) -> None:
        """Gateways accept a refund before they have moved the money: ask until they have."""
        succeeded = await _final(
            self._gateway(refund.gateway).refund_succeeded(
                out_trade_no=refund.order_id, refund_no=refund.refund_no
            )
        )
        if not succeeded:
            raise RefundNotConfirmed(f"refund {refund.refund_no} is not confirmed yet")

    def _gateway(self, gateway: Gateway) -> PaymentGateway:
        found = self._gateways.get(gateway)
        if found is None:
            # A worker deployed without this gateway's settings: another worker, or this one
            # once configured, must take the step, so it stays retryable.
            raise RuntimeError(f"this worker is not configured for {gateway}")
        return found


async def _final(call: Awaitable[T]) -> T:
    try:
        return await call
    except GatewayRejected as refusal:
        raise _non_retryable(refusal) from refusal


def _non_retryable(refusal: GatewayRejected) -> ApplicationError:
    return ApplicationError(str(refusal), type=type(refusal).__name__, non_retryable=True)
