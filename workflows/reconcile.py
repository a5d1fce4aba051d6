"""Reconciliation: no recorded payment is left undecided.

The callback records a payment before it hands it to a saga. If that hand-over failed
(Temporal was down) and the gateway stopped resending, the payment would wait forever; this
saga, run on a schedule, hands such payments on: to their order's saga if it still runs,
else to a late-payment saga of their own.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from core.contracts import PaymentNotice, Reconciliation
    from core.vocabulary import late_payment_workflow_id, order_workflow_id
    from workflows.steps import DATABASE_STEP

from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow


@workflow.defn
class ReconcileWorkflow:
    @workflow.run
    async def run(self, reconciliation: Reconciliation) -> int:
        """Hands on every undecided payment it finds; returns how many."""
        notices: list[PaymentNotice] = await workflow.execute_activity_method(
            OrderActivities.undecided_payments, reconciliation, **DATABASE_STEP
        )
        for notice in notices:
            await _hand_over(notice)
        return len(notices)


async def _hand_over(notice: PaymentNotice) -> None:
    try:
        order = workflow.get_external_workflow_handle(order_workflow_id(notice.order_id))
        await order.signal(OrderWorkflow.payment_notified, notice)
        return
    except FailureError:
        pass  # its saga has ended
    try:
        await workflow.start_child_workflow(
            LatePaymentWorkflow.run,
            notice,
            id=late_payment_workflow_id(notice.gateway, notice.trade_no),
            # It must finish its refund even if this run ends first.
            parent_close_policy=ParentClosePolicy.ABANDON,
        )
    except WorkflowAlreadyStartedError:
        pass  # a late-payment saga is settling it already
