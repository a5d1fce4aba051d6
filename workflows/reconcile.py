"""Reconciliation: nothing is left half done when a saga, a notification or a process is lost.

Run on a schedule, it looks for what no saga has brought to its end although it had the time to,
and drives each to its right end through the normal paths:
- a payment recorded (and acknowledged) but never decided: handed to its order's saga if that
  still runs, else to a late-payment saga of its own;
- an order pending past its deadline with no saga running: recovered — the gateway is asked, a
  paid trade we never heard of is settled (so paid or refunded), an unpaid one closed, expired;
- a refund the gateway has not confirmed, with no saga running for it: settled again, which
  runs the refund (idempotent by its number) and asks until it is final;
- a flagged order: reported, with what the gateway says of its trade, for an operator.
Each run's report is its result (in the Web UI) and is kept for `GET /v1/admin/reconciliation/runs`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.orders import OrderActivities
    from activities.payments import PaymentActivities
    from activities.sagas import SagaActivities
    from core.contracts import (
        Finding,
        Findings,
        OrderRef,
        PaymentNotice,
        Reconciliation,
        ReconciliationReport,
        TradeCheck,
        TradeRef,
    )
    from core.vocabulary import late_payment_workflow_id, order_workflow_id, recovery_workflow_id
    from workflows import search_attributes
    from workflows.steps import DATABASE_STEP, GATEWAY_STEP, refused_for_good

from workflows.late_payment import LatePaymentWorkflow, late_payment_summary
from workflows.order import OrderWorkflow
from workflows.recovery import RecoverOrderWorkflow

# Runs from this change on drive every kind of unfinished work to its end, and report it.
HEALING = "reconciliation-heals"
IN_HAND = "left to its saga, which is running"
# Asking the gateway about a flagged order only informs the report.
REPORT_STEP: dict[str, Any] = {
    **GATEWAY_STEP,
    "retry_policy": RetryPolicy(maximum_attempts=3),
}


@workflow.defn
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._running: set[str] = set()

    @workflow.run
    async def run(self, reconciliation: Reconciliation) -> ReconciliationReport:
        started_at = workflow.now()
        if not workflow.patched(HEALING):
            return await self._hand_over_undecided(reconciliation, started_at)
        workflow.set_current_details("looking for unfinished work")
        found: Findings = await workflow.execute_activity_method(
            OrderActivities.find_unfinished,
            reconciliation,
            summary="find unfinished work",
            **DATABASE_STEP,
        )
        order_ids = sorted(
            {ref.order_id for ref in found.overdue_orders + found.flagged_orders}
            | {notice.order_id for notice in found.open_refunds}
        )
        running: list[str] = await workflow.execute_activity_method(
            SagaActivities.running_order_sagas,
            order_ids,
            summary="see which sagas still run",
            **GATEWAY_STEP,
        )
        self._running = set(running)
        findings = [await self._hand_over(notice) for notice in found.undecided_payments]
        findings += [await self._recover(order) for order in found.overdue_orders]
        findings += [await self._resume_refund(notice) for notice in found.open_refunds]
        findings += [await self._report_flagged(order) for order in found.flagged_orders]
        report = ReconciliationReport(
            workflow_run_id=workflow.info().run_id,
            started_at=started_at,
            finished_at=workflow.now(),
            findings=findings,
        )
        await workflow.execute_activity_method(
            OrderActivities.record_reconciliation,
            report,
            summary=f"record the report ({len(findings)} findings)",
            **DATABASE_STEP,
        )
        workflow.set_current_details(f"{len(findings)} findings, each driven to its end")
        return report

    async def _hand_over_undecided(
        self, reconciliation: Reconciliation, started_at: datetime
    ) -> ReconciliationReport:
        """What runs from before HEALING did — hand on undecided payments, no more: kept so
        that they replay as they ran."""
        notices: list[PaymentNotice] = await workflow.execute_activity_method(
            OrderActivities.undecided_payments, reconciliation, **DATABASE_STEP
        )
        return ReconciliationReport(
            workflow_run_id=workflow.info().run_id,
            started_at=started_at,
            finished_at=workflow.now(),
            findings=[await self._hand_over(notice) for notice in notices],
        )

    async def _hand_over(self, notice: PaymentNotice) -> Finding:
        def found(action: str) -> Finding:
            return Finding(
                kind="undecided_payment",
                order_id=notice.order_id,
                trade_no=notice.trade_no,
                action=action,
            )

        try:
            order = workflow.get_external_workflow_handle(order_workflow_id(notice.order_id))
            await order.signal(OrderWorkflow.payment_notified, notice)
            return found("handed to its order's saga")
        except FailureError:
            pass  # its saga has ended
        return found(await self._start_late_payment(notice, "settled by a late-payment saga"))

    async def _recover(self, order: OrderRef) -> Finding:
        def found(action: str) -> Finding:
            return Finding(kind="overdue_order", order_id=order.order_id, action=action)

        if order.order_id in self._running:
            return found(IN_HAND)
        try:
            await workflow.start_child_workflow(
                RecoverOrderWorkflow.run,
                order,
                id=recovery_workflow_id(order.order_id),
                # It must finish even if this run ends first.
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=search_attributes.of_order(
                    order.order_id,
                    gateway=order.gateway,
                    reservation_id=order.reservation_id,
                    kind=order.kind,
                ),
                static_summary=f"recover order {order.order_id}: pending past its deadline",
            )
        except WorkflowAlreadyStartedError:
            return found("being recovered already")
        return found("no saga runs for it: recovery started (ask the gateway, then end it)")

    async def _resume_refund(self, notice: PaymentNotice) -> Finding:
        action = (
            IN_HAND
            if notice.order_id in self._running
            else await self._start_late_payment(notice, "refund resumed by a late-payment saga")
        )
        return Finding(
            kind="open_refund", order_id=notice.order_id, trade_no=notice.trade_no, action=action
        )

    async def _start_late_payment(self, notice: PaymentNotice, started: str) -> str:
        try:
            await workflow.start_child_workflow(
                LatePaymentWorkflow.run,
                notice,
                id=late_payment_workflow_id(notice.gateway, notice.trade_no),
                # It must finish its refund even if this run ends first.
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=search_attributes.of_order(
                    notice.order_id, gateway=notice.gateway
                ),
                static_summary=late_payment_summary(notice),
            )
        except WorkflowAlreadyStartedError:
            return "a late-payment saga is settling it already"
        return started

    async def _report_flagged(self, order: OrderRef) -> Finding:
        def found(action: str) -> Finding:
            return Finding(kind="flagged_order", order_id=order.order_id, action=action)

        waiting = "waiting for an operator" + (
            " (its saga is running)" if order.order_id in self._running else ""
        )
        try:
            check: TradeCheck = await workflow.execute_activity_method(
                PaymentActivities.check_trade,
                TradeRef(gateway=order.gateway, order_id=order.order_id),
                summary=f"ask {order.gateway} about flagged order {order.order_id}",
                **GATEWAY_STEP,
            )
        except ActivityError as failure:
            if (refusal := refused_for_good(failure)) is None:
                raise
            return found(f"{waiting}; {order.gateway} would not say: {refusal}")
        said = "paid" if check.payment is not None else "not paid"
        return found(f"{waiting}; {order.gateway} says the trade is {said}")
