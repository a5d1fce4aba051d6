"""An order left pending past its deadline with no saga to end it (its saga was terminated, or
lost): the gateway is asked, and the order ends as its saga would have ended it — paid or
refunded if the trade was paid, else its trade closed and the order expired. As its saga would
have, it then asks the gateway once more when the trade can no longer be paid: a QR code nobody
had scanned stays payable at Alipay after its close, and a payment whose every notification is
lost is found only so (and refunded)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from core.contracts import OrderEnding, OrderOutcome, OrderRef, TradeCheck, TradeRef
    from core.vocabulary import OrderStatus
    from workflows.steps import (
        DATABASE_STEP,
        GATEWAY_STEP,
        LAST_WORD_DELAY,
        Settled,
        ask_gateway,
        refused_for_good,
        settle,
        show_order,
    )

REASON = "not paid before the payment timeout (its saga had gone; ended by reconciliation)"
# Recoveries from this change on ask the gateway once more when the trade can no longer be paid.
LAST_WORD = "recovery-last-word"


@workflow.defn
class RecoverOrderWorkflow:
    @workflow.run
    async def run(self, order: OrderRef) -> OrderOutcome:
        trade = TradeRef(gateway=order.gateway, order_id=order.order_id)
        flag = None
        # Asked before the trade's expiry, the gateway's answer may not be its last.
        last_word = (
            order.payable_until + LAST_WORD_DELAY if order.payable_until is not None else None
        )
        asked_at = workflow.now()
        workflow.set_current_details(f"asking {order.gateway} what became of the trade")
        # Refused: the close, next, decides.
        check = await ask_gateway(trade, "whether the trade was paid") or TradeCheck(payment=None)
        if check.payment is None:
            workflow.set_current_details(f"closing trade {order.order_id}")
            try:
                check = await workflow.execute_activity_method(
                    PaymentActivities.close_trade,
                    trade,
                    summary=f"close trade {order.order_id}",
                    **GATEWAY_STEP,
                )
            except ActivityError as failure:
                if (refusal := refused_for_good(failure)) is None:
                    raise
                flag = f"the gateway refused to close the trade ({refusal})"
        if check.payment is not None:
            settled = await settle(check.payment)
        else:
            ending = OrderEnding(
                order_id=order.order_id, status=OrderStatus.EXPIRED, reason=REASON, flag=flag
            )
            status: OrderStatus = await workflow.execute_activity_method(
                OrderActivities.end_order, ending, summary="end the order expired", **DATABASE_STEP
            )
            settled = Settled(status, flagged=flag is not None)
        show_order(settled.status, flagged=settled.flagged)
        if (
            check.payment is None
            and last_word is not None
            and asked_at < last_word
            and workflow.patched(LAST_WORD)
        ):
            workflow.set_current_details(
                f"{settled.status}: asking {order.gateway} once more at "
                f"{last_word:%Y-%m-%d %H:%M:%S} UTC, when the trade can no longer be paid"
            )
            if (wait := last_word - workflow.now()) > timedelta(0):
                await workflow.sleep(wait, summary="the trade's expiry")
            late = await ask_gateway(trade, "whether the trade was paid after all")
            if late is not None and late.payment is not None:
                settled = await settle(late.payment)
                show_order(settled.status, flagged=settled.flagged)
        workflow.set_current_details(f"order {order.order_id} is {settled.status}")
        return OrderOutcome(order_id=order.order_id, status=settled.status)
