"""An order left pending past its deadline with no saga to end it (its saga was terminated, or
lost): the gateway is asked, and the order ends as its saga would have ended it — paid or
refunded if the trade was paid, else its trade closed and the order expired."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from core.contracts import OrderEnding, OrderOutcome, OrderRef, TradeCheck, TradeRef
    from core.vocabulary import OrderStatus
    from workflows import search_attributes
    from workflows.steps import DATABASE_STEP, GATEWAY_STEP, Settled, refused_for_good, settle

REASON = "not paid before the payment timeout (its saga had gone; ended by reconciliation)"


@workflow.defn
class RecoverOrderWorkflow:
    @workflow.run
    async def run(self, order: OrderRef) -> OrderOutcome:
        trade = TradeRef(gateway=order.gateway, order_id=order.order_id)
        flag = None
        workflow.set_current_details(f"asking {order.gateway} what became of the trade")
        try:
            check: TradeCheck = await workflow.execute_activity_method(
                PaymentActivities.check_trade,
                trade,
                summary=f"ask {order.gateway} whether the trade was paid",
                **GATEWAY_STEP,
            )
        except ActivityError as failure:
            if refused_for_good(failure) is None:
                raise
            check = TradeCheck(payment=None)  # the close, next, decides
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
        workflow.upsert_search_attributes(
            [
                search_attributes.ORDER_STATUS.value_set(settled.status),
                search_attributes.FLAGGED.value_set(settled.flagged),
            ]
        )
        workflow.set_current_details(f"order {order.order_id} is {settled.status}")
        return OrderOutcome(order_id=order.order_id, status=settled.status)
