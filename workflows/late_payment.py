"""A payment notified after its order's workflow ended: settled, and so refunded, once."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contracts import OrderOutcome, PaymentNotice
    from workflows.steps import settle


@workflow.defn
class LatePaymentWorkflow:
    @workflow.run
    async def run(self, notice: PaymentNotice) -> OrderOutcome:
        status = await settle(notice)
        return OrderOutcome(order_id=notice.order_id, status=status)
