"""How each kind of step is run, and the settle-then-compensate step every saga shares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from core.contracts import (
        PaymentNotice,
        RefundFailure,
        RefundOrder,
        Settlement,
        TradeCheck,
        TradeRef,
    )
    from core.vocabulary import OrderStatus
    from workflows import search_attributes

# The database may be down for a while: keep trying, never give up on a decided step.
DATABASE_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30)),
}
# Gateway calls retry transport errors and 5xx for as long as it takes; refusals are final
# (raised non-retryable by the activities).
GATEWAY_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
# How a step run as a local activity fails: with the activity's own ApplicationError when it
# raised one (temporalio 1.35 does not wrap it), else, timed out, with an ActivityError.
LOCAL_STEP_FAILURES = (ActivityError, ApplicationError)
# After a trade's expiry, this long for the gateway's clock and books to agree that it is over:
# then what the gateway says of it is final.
LAST_WORD_DELAY = timedelta(seconds=30)
# Alipay accepts a refund before it has moved the money; ask again until it has.
REFUND_CONFIRMATION_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)
    ),
}


@dataclass(frozen=True)
class Settled:
    """Where dealing with a payment left its order."""

    status: OrderStatus
    # The order waits for an operator.
    flagged: bool = False
    # The refund the gateway refused for good, which an operator may have tried again.
    failed_refund: RefundOrder | None = None


async def settle(notice: PaymentNotice) -> Settled:
    """Decide a captured payment; if it may not pay its order, refund it (compensation)."""
    workflow.set_current_details(f"deciding trade {notice.trade_no}")
    settlement: Settlement = await workflow.execute_activity_method(
        OrderActivities.settle_payment,
        notice,
        summary=f"decide trade {notice.trade_no}",
        **DATABASE_STEP,
    )
    if settlement.refund is None:
        return Settled(settlement.order_status, settlement.flagged)
    return await refund(settlement.refund, flagged=settlement.flagged)


async def refund(order: RefundOrder, *, flagged: bool = False) -> Settled:
    """Give a payment's money back and confirm it; a refusal for good flags the order."""
    # Once decided, a refund runs to its end even if the workflow is cancelled meanwhile.
    return await asyncio.shield(asyncio.ensure_future(_refund(order, flagged=flagged)))


async def _refund(order: RefundOrder, *, flagged: bool) -> Settled:
    why = f": {order.reason}" if order.reason else ""
    workflow.set_current_details(f"refunding trade {order.trade_no}{why}")
    try:
        await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            order,
            summary=f"refund trade {order.trade_no}",
            **GATEWAY_STEP,
        )
        await workflow.execute_activity_method(
            PaymentActivities.confirm_refund,
            order,
            summary=f"confirm refund {order.refund_no}",
            **REFUND_CONFIRMATION_STEP,
        )
    except ActivityError as failure:
        refusal = refused_for_good(failure)
        if refusal is None:
            raise
        status: OrderStatus = await workflow.execute_activity_method(
            OrderActivities.fail_refund,
            RefundFailure(refund=order, reason=refusal),
            summary=f"record refund {order.refund_no} refused",
            **DATABASE_STEP,
        )
        return Settled(status, flagged=True, failed_refund=order)
    completed: OrderStatus = await workflow.execute_activity_method(
        OrderActivities.complete_refund,
        order,
        summary=f"record refund {order.refund_no} done",
        **DATABASE_STEP,
    )
    return Settled(completed, flagged)


async def ask_gateway(trade: TradeRef, question: str) -> TradeCheck | None:
    """What the gateway says of the trade; None if it refuses to say, for good."""
    try:
        check: TradeCheck = await workflow.execute_activity_method(
            PaymentActivities.check_trade,
            trade,
            summary=f"ask {trade.gateway} {question}",
            **GATEWAY_STEP,
        )
    except ActivityError as failure:
        if refused_for_good(failure) is None:
            raise
        return None
    return check


def show_order(status: OrderStatus, *, flagged: bool) -> None:
    """The order's status and flag, as the UI's search attributes show them."""
    workflow.upsert_search_attributes(
        [
            search_attributes.ORDER_STATUS.value_set(status),
            search_attributes.FLAGGED.value_set(flagged),
        ]
    )


def refused_for_good(failure: ActivityError) -> str | None:
    """The gateway's final refusal of a step (retrying would change nothing), or None when the
    step failed otherwise."""
    cause = failure.cause
    if isinstance(cause, ApplicationError) and cause.non_retryable:
        return cause.message
    return None
