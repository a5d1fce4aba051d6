"""Gateway activities. Each is idempotent by a key Alipay honours: the order's `out_trade_no`
for creating, querying and closing its trade, the refund's `out_request_no` for refunds.

A gateway's final refusal becomes a non-retryable ApplicationError carrying the refusal's
type name; a transient failure is raised as is, for Temporal to retry.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.alipay import AlipayClient, TradeState
from gateways.errors import GatewayRejected, TradeNotFound, TradeStatusError
from paysaga.money import to_amount, to_cents
from workflows.contracts import PaymentNotice, PaymentRequest, RefundOrder, TradeCheck

PAID_STATES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
T = TypeVar("T")


class RefundNotConfirmed(Exception):
    """The gateway has not (yet) confirmed a refund: retried until it does."""


class PaymentActivities:
    def __init__(self, alipay: AlipayClient) -> None:
        self._alipay = alipay

    @activity.defn
    async def create_payment(self, request: PaymentRequest) -> str:
        """The QR code of the order's trade; precreate answers the same one when repeated."""
        return await _final(
            self._alipay.precreate(
                out_trade_no=request.order_id,
                amount=to_amount(request.amount_cents),
                subject=request.subject,
                time_expire=request.expires_at,
            )
        )

    @activity.defn
    async def check_trade(self, order_id: str) -> TradeCheck:
        try:
            state = await self._alipay.query(out_trade_no=order_id)
        except TradeNotFound:
            # Never scanned: a precreated trade exists at Alipay only once the buyer scans.
            return TradeCheck(payment=None)
        except GatewayRejected as refusal:
            raise _non_retryable(refusal) from refusal
        return TradeCheck(payment=_payment(order_id, state))

    @activity.defn
    async def close_trade(self, order_id: str) -> TradeCheck:
        """Close the trade so it can no longer be paid; if it was paid first, say so."""
        try:
            await self._alipay.close(out_trade_no=order_id)
        except TradeNotFound:
            # Never scanned: nothing exists at the gateway to close.
            return TradeCheck(payment=None)
        except TradeStatusError:
            # Only a paid trade refuses to close: the payment won the race.
            return await self.check_trade(order_id)
        except GatewayRejected as refusal:
            raise _non_retryable(refusal) from refusal
        return TradeCheck(payment=None)

    @activity.defn
    async def refund_payment(self, refund: RefundOrder) -> None:
        await _final(
            self._alipay.refund(
                out_trade_no=refund.order_id,
                amount=to_amount(refund.amount_cents),
                out_request_no=refund.refund_no,
            )
        )

    @activity.defn
    async def confirm_refund(self, refund: RefundOrder) -> None:
        """Alipay's `code=10000` only accepts a refund; its refund query says it was made."""
        state = await _final(
            self._alipay.refund_query(out_trade_no=refund.order_id, out_request_no=refund.refund_no)
        )
        if not state.succeeded:
            raise RefundNotConfirmed(f"refund {refund.refund_no} is not confirmed yet")


async def _final(call: Awaitable[T]) -> T:
    try:
        return await call
    except GatewayRejected as refusal:
        raise _non_retryable(refusal) from refusal


def _non_retryable(refusal: GatewayRejected) -> ApplicationError:
    return ApplicationError(str(refusal), type=type(refusal).__name__, non_retryable=True)


def _payment(order_id: str, state: TradeState) -> PaymentNotice | None:
    if state.trade_status not in PAID_STATES or state.trade_no is None:
        return None
    return PaymentNotice(
        order_id=order_id,
        trade_no=state.trade_no,
        amount_cents=to_cents(state.total_amount),
        paid_at=state.paid_at,
    )
