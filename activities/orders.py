"""Database activities: each one transaction of store.orders, safe to run again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.contracts import (
    Claim,
    ClaimRequest,
    Findings,
    OperatorAction,
    OrderEnding,
    PaymentInstructions,
    PaymentNotice,
    PaymentStart,
    Reconciliation,
    ReconciliationReport,
    RefundFailure,
    RefundOrder,
    RefundReopening,
    Settlement,
)
from core.vocabulary import OrderStatus
from store import orders
from store import reconciliation as reconciliation_store
from store.db import transaction

# Findings of each kind taken per reconciliation run; the next run takes the rest.
RECONCILE_BATCH = 200


class OrderActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def claim_reservation(self, request: ClaimRequest) -> Claim:
        try:
            with transaction(self._engine) as session:
                return orders.claim_reservation(session, request=request, now=_now())
        except orders.CreationAbandoned as abandoned:
            raise ApplicationError(
                f"the order was not made: {abandoned}", type="CreationAbandoned", non_retryable=True
            ) from abandoned

    @activity.defn
    def abandon_creation(self, order_id: str) -> bool:
        """Give up on making the order unless it was made; True if it stands made."""
        with transaction(self._engine) as session:
            return orders.abandon_creation(session, order_id=order_id, now=_now())

    @activity.defn
    def record_payment_instructions(self, instructions: PaymentInstructions) -> None:
        # Only sagas that claimed before they made the trade call this: theirs has a QR code.
        assert instructions.qr_code is not None
        with transaction(self._engine) as session:
            orders.record_qr_code(
                session, order_id=instructions.order_id, qr_code=instructions.qr_code, now=_now()
            )

    @activity.defn
    def start_payment(self, start: PaymentStart) -> str | None:
        """Why the deferred order may not have its trade, or None (and, given it, recorded)."""
        with transaction(self._engine) as session:
            return orders.start_payment(session, start=start, now=_now())

    @activity.defn
    def settle_payment(self, notice: PaymentNotice) -> Settlement:
        with transaction(self._engine) as session:
            return orders.settle_payment(session, notice=notice, now=_now())

    @activity.defn
    def complete_refund(self, refund: RefundOrder) -> OrderStatus:
        with transaction(self._engine) as session:
            return orders.complete_refund(session, refund=refund, now=_now())

    @activity.defn
    def fail_refund(self, failure: RefundFailure) -> OrderStatus:
        with transaction(self._engine) as session:
            return orders.fail_refund(
                session, refund=failure.refund, reason=failure.reason, now=_now()
            )

    @activity.defn
    def end_order(self, ending: OrderEnding) -> OrderStatus:
        with transaction(self._engine) as session:
            return orders.end_order(session, ending=ending, now=_now())

    @activity.defn
    def extend_deadline(self, action: OperatorAction) -> datetime:
        with transaction(self._engine) as session:
            return orders.extend_deadline(session, action=action, now=_now())

    @activity.defn
    def reopen_refund(self, reopening: RefundReopening) -> bool:
        """Whether the order stays flagged for another reason."""
        with transaction(self._engine) as session:
            return orders.reopen_refund(
                session, refund=reopening.refund, action=reopening.action, now=_now()
            )

    @activity.defn
    def refund_paid_order(self, action: OperatorAction) -> RefundOrder | None:
        with transaction(self._engine) as session:
            return orders.refund_paid_order(session, action=action, now=_now())

    @activity.defn
    def accept_flag(self, action: OperatorAction) -> None:
        with transaction(self._engine) as session:
            orders.accept_flag(session, action=action, now=_now())

    @activity.defn
    def find_unfinished(self, reconciliation: Reconciliation) -> Findings:
        """What no saga has brought to its end although it had the time to."""
        before = _now() - timedelta(seconds=reconciliation.older_than_seconds)
        with transaction(self._engine) as session:
            return Findings(
                overdue_orders=reconciliation_store.overdue_orders(
                    session, deadline_before=before, limit=RECONCILE_BATCH
                ),
                undecided_payments=orders.undecided_payments(
                    session, recorded_before=before, limit=RECONCILE_BATCH
                ),
                open_refunds=reconciliation_store.open_refunds(
                    session, decided_before=before, limit=RECONCILE_BATCH
                ),
                flagged_orders=reconciliation_store.flagged_orders(session, limit=RECONCILE_BATCH),
            )

    @activity.defn
    def undecided_payments(self, reconciliation: Reconciliation) -> list[PaymentNotice]:
        """Kept for reconciliation runs from before they healed, which replay with it."""
        recorded_before = _now() - timedelta(seconds=reconciliation.older_than_seconds)
        with transaction(self._engine) as session:
            return orders.undecided_payments(
                session, recorded_before=recorded_before, limit=RECONCILE_BATCH
            )

    @activity.defn
    def record_reconciliation(self, report: ReconciliationReport) -> None:
        with transaction(self._engine) as session:
            reconciliation_store.record_run(session, report=report)


def _now() -> datetime:
    return datetime.now(UTC)
