"""A payment notified after its order's workflow ended: settled, and so refunded, once."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contracts import OrderOutcome, PaymentNotice
    from core.money import format_amount
    from workflows.order import OPERATORS
    from workflows.steps import settle, show_order


@workflow.defn
class LatePaymentWorkflow:
    @workflow.run
    async def run(self, notice: PaymentNotice) -> OrderOutcome:
        settled = await settle(notice)
        if workflow.patched(OPERATORS):
            # The order's own saga has ended: this one tells the UI what became of the order.
            show_order(settled.status, flagged=settled.flagged)
        workflow.set_current_details(f"order {notice.order_id} is {settled.status}")
        return OrderOutcome(order_id=notice.order_id, status=settled.status)


def late_payment_summary(notice: PaymentNotice) -> str:
    """What the UI shows of a late-payment saga, whoever starts it."""
    return (
        f"late payment of {format_amount(notice.amount_cents)} on trade {notice.trade_no} "
        f"for order {notice.order_id}"
    )
