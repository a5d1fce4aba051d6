"""How each kind of step is run, and the settle-then-compensate step both sagas share."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from core.contracts import PaymentNotice, RefundFailure, RefundOrder, Settlement
    from core.vocabulary import OrderStatus

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
# Alipay accepts a refund before it has moved the money; ask again until it has.
REFUND_CONFIRMATION_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)
    ),
}


async def settle(notice: PaymentNotice) -> OrderStatus:
    """Decide a captured payment; if it may not pay its order, refund it (compensation).

    Returns the order's status once the payment has been dealt with.
    """
    settlement: Settlement = await workflow.execute_activity_method(
        OrderActivities.settle_payment, notice, **DATABASE_STEP
    )
    if settlement.refund is None:
        return settlement.order_status
    # Once decided, a refund runs to its end even if the workflow is cancelled meanwhile.
    return await asyncio.shield(asyncio.ensure_future(_refund(settlement.refund)))


async def _refund(refund: RefundOrder) -> OrderStatus:
    try:
        await workflow.execute_activity_method(
            PaymentActivities.refund_payment, refund, **GATEWAY_STEP
        )
        await workflow.execute_activity_method(
            PaymentActivities.confirm_refund, refund, **REFUND_CONFIRMATION_STEP
        )
    except ActivityError as failure:
        refusal = refused_for_good(failure)
        if refusal is None:
            raise
        status: OrderStatus = await workflow.execute_activity_method(
            OrderActivities.fail_refund,
            RefundFailure(refund=refund, reason=refusal),
            **DATABASE_STEP,
        )
        return status
    completed: OrderStatus = await workflow.execute_activity_method(
        OrderActivities.complete_refund, refund, **DATABASE_STEP
    )
    return completed


def refused_for_good(failure: ActivityError) -> str | None:
    """The gateway's final refusal of a step (retrying would change nothing), or None when the
    step failed otherwise."""
    cause = failure.cause
    if isinstance(cause, ApplicationError) and cause.non_retryable:
        return cause.message
    return None
