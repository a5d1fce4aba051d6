"""Operators' rules and reconciliation's queries in the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from core.contracts import (
    Finding,
    OperatorAction,
    OrderEnding,
    PaymentNotice,
    ReconciliationReport,
    RefundOrder,
)
from core.vocabulary import Gateway, OrderStatus
from store import orders, reconciliation
from store.db import transaction
from store.models import PaymentStatus, RefundStatus
from tests.orders import TRADE_EXTENSION, claim

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def settle(engine: Engine, order_id: str, trade_no: str) -> RefundOrder | None:
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY, order_id=order_id, trade_no=trade_no, amount_cents=2970, paid_at=NOW
    )
    with transaction(engine) as session:
        return orders.settle_payment(session, notice=notice, now=NOW).refund


def test_a_deadline_moves_later_only_while_the_order_is_pending(engine: Engine) -> None:
    claim(engine, "o1", now=NOW)
    later = NOW + timedelta(hours=2)
    extension = OperatorAction(order_id="o1", action="extend_deadline", until=later, note="n")
    with transaction(engine) as session:
        assert orders.extend_deadline(session, action=extension, now=NOW) == later
    earlier = extension.model_copy(update={"until": NOW})
    with transaction(engine) as session:
        assert orders.extend_deadline(session, action=earlier, now=NOW) == later
    ending = OrderEnding(order_id="o1", status=OrderStatus.CANCELLED, reason="by the client")
    with transaction(engine) as session:
        orders.end_order(session, ending=ending, now=NOW)
        still = extension.model_copy(update={"until": later + timedelta(hours=1)})
        assert orders.extend_deadline(session, action=still, now=NOW) == later
        assert [a.action for a in orders.actions_on(session, "o1")] == ["extend_deadline"]


def test_a_refused_refund_reopened_is_pending_again_and_its_flag_settled(engine: Engine) -> None:
    claim(engine, "o1", now=NOW)
    claim(engine, "o2", now=NOW)  # o1 superseded: its payment must go back
    refund = settle(engine, "o1", "T1")
    assert refund is not None and refund.reason == "the order was superseded by o2"
    with transaction(engine) as session:
        orders.fail_refund(session, refund=refund, reason="ACQ.TRADE_HAS_FINISHED", now=NOW)
        orders.flag_order(session, order_id="o1", reason="something else", now=NOW)
    retry = OperatorAction(order_id="o1", action="retry_refund", note="try again")
    with transaction(engine) as session:
        assert orders.reopen_refund(session, refund=refund, action=retry, now=NOW) is True
        order = orders.get_order(session, "o1")
        assert order is not None and order.flag_reason == "something else"
        [row] = orders.refunds_of(session, "o1")
        assert row.status == RefundStatus.PENDING and row.completed_at is None
        [payment] = orders.payments_of(session, "o1")
        assert payment.status == PaymentStatus.REFUNDING
    with transaction(engine) as session:
        assert orders.complete_refund(session, refund=refund, now=NOW) == OrderStatus.REFUNDED


def test_an_operator_refund_takes_a_paid_orders_days_back(engine: Engine) -> None:
    claim(engine, "o1", now=NOW)
    assert settle(engine, "o1", "T1") is None
    with transaction(engine) as session:
        orders.flag_order(session, order_id="o1", reason="a payment without an amount", now=NOW)
    action = OperatorAction(order_id="o1", action="refund", note="paid twice")
    with transaction(engine) as session:
        refund = orders.refund_paid_order(session, action=action, now=NOW)
        assert refund is not None and refund.reason == "refunded by an operator: paid twice"
        order = orders.get_order(session, "o1")
        assert order is not None and order.flag_reason is None
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None and reservation.valid_until == NOW
    with transaction(engine) as session:
        # Deciding again finds nothing paid to refund.
        assert orders.refund_paid_order(session, action=action, now=NOW) is None
        assert orders.complete_refund(session, refund=refund, now=NOW) == OrderStatus.REFUNDED


def test_a_paid_order_stays_paid_when_a_second_trade_of_it_is_refunded(engine: Engine) -> None:
    claim(engine, "o1", now=NOW)
    assert settle(engine, "o1", "T1") is None
    second = settle(engine, "o1", "T2")
    assert second is not None
    with transaction(engine) as session:
        assert orders.complete_refund(session, refund=second, now=NOW) == OrderStatus.PAID


def test_accepting_a_flag_keeps_the_note_and_clears_the_flag(engine: Engine) -> None:
    claim(engine, "o1", now=NOW)
    with transaction(engine) as session:
        orders.flag_order(session, order_id="o1", reason="close refused", now=NOW)
    action = OperatorAction(order_id="o1", action="accept", note="closed by hand")
    with transaction(engine) as session:
        orders.accept_flag(session, action=action, now=NOW)
        order = orders.get_order(session, "o1")
        assert order is not None and order.flag_reason is None
        [kept] = orders.actions_on(session, "o1")
        assert (kept.action, kept.note) == ("accept", "closed by hand")


def test_reconciliation_finds_overdue_orders_open_refunds_and_flags(engine: Engine) -> None:
    claim(engine, "overdue", reservation="room-a", now=NOW - timedelta(hours=1))
    claim(engine, "fresh", reservation="room-b", now=NOW)
    claim(engine, "old", reservation="room-c", now=NOW)
    claim(engine, "new", reservation="room-c", now=NOW)
    assert settle(engine, "old", "T9") is not None
    with transaction(engine) as session:
        orders.flag_order(session, order_id="fresh", reason="odd", now=NOW)
    later = NOW + timedelta(minutes=1)
    with transaction(engine) as session:
        # Claims here expire 15 minutes after they are made.
        overdue = reconciliation.overdue_orders(session, deadline_before=NOW, limit=10)
        assert [ref.order_id for ref in overdue] == ["overdue"]
        # Recovering it asks the gateway once more when its trade can no longer be paid.
        assert overdue[0].payable_until == NOW - timedelta(minutes=45) + TRADE_EXTENSION
        refunds = reconciliation.open_refunds(session, decided_before=later, limit=10)
        assert [(notice.order_id, notice.trade_no) for notice in refunds] == [("old", "T9")]
        assert reconciliation.open_refunds(session, decided_before=NOW, limit=10) == []
        flagged = reconciliation.flagged_orders(session, limit=10)
        assert [ref.order_id for ref in flagged] == ["fresh"]


def test_a_run_report_is_kept_once(engine: Engine) -> None:
    report = ReconciliationReport(
        workflow_run_id="run-1",
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=2),
        findings=[Finding(kind="overdue_order", order_id="o1", action="recovery started")],
    )
    for _ in range(2):  # a retried activity records the same run
        with transaction(engine) as session:
            reconciliation.record_run(session, report=report)
    with transaction(engine) as session:
        [run] = reconciliation.recent_runs(session, limit=5)
        assert (run.workflow_run_id, run.findings, run.started_at) == ("run-1", 1, NOW)
        assert "recovery started" in run.report
