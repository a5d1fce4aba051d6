"""What reconciliation looks for — work no saga has brought to its end — and its run reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from core.contracts import OrderRef, PaymentNotice, ReconciliationReport
from core.vocabulary import Gateway, OrderKind, OrderStatus
from store.models import Order, Payment, ReconciliationRun, Refund, RefundStatus
from store.orders import notice_of
from store.rows import insert_ignoring_conflict


def overdue_orders(session: Session, *, deadline_before: datetime, limit: int) -> list[OrderRef]:
    """Orders still pending although their deadline passed before `deadline_before`."""
    found = session.exec(
        select(Order)
        .where(Order.status == OrderStatus.PENDING, Order.expires_at < deadline_before)
        .order_by(col(Order.expires_at))
        .limit(limit)
    ).all()
    return [_ref(order) for order in found]


def open_refunds(session: Session, *, decided_before: datetime, limit: int) -> list[PaymentNotice]:
    """Payments whose refund was decided before `decided_before` and is not final yet."""
    found = session.exec(
        select(Payment)
        .join(Refund, col(Refund.payment_id) == col(Payment.id))
        .where(Refund.status == RefundStatus.PENDING, Refund.created_at < decided_before)
        .order_by(col(Refund.created_at))
        .limit(limit)
    ).all()
    return [notice_of(payment) for payment in found]


def flagged_orders(session: Session, *, limit: int) -> list[OrderRef]:
    found = session.exec(
        select(Order)
        .where(col(Order.flag_reason).is_not(None))
        .order_by(col(Order.updated_at))
        .limit(limit)
    ).all()
    return [_ref(order) for order in found]


def record_run(session: Session, *, report: ReconciliationReport) -> None:
    """Keep a run's report; recording the same run again changes nothing."""
    insert_ignoring_conflict(
        session,
        ReconciliationRun,
        {
            "workflow_run_id": report.workflow_run_id,
            "started_at": report.started_at,
            "finished_at": report.finished_at,
            "findings": len(report.findings),
            "report": report.model_dump_json(include={"findings"}),
        },
        conflict_on=["workflow_run_id"],
    )


def recent_runs(session: Session, *, limit: int) -> Sequence[ReconciliationRun]:
    return session.exec(
        select(ReconciliationRun).order_by(col(ReconciliationRun.started_at).desc()).limit(limit)
    ).all()


def _ref(order: Order) -> OrderRef:
    return OrderRef(
        order_id=order.id,
        reservation_id=order.reservation_id,
        kind=OrderKind(order.kind),
        gateway=Gateway(order.gateway),
        payable_until=order.payable_until,
    )
