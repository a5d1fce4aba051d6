"""Counts of orders, refunds and webhook deliveries as the database holds them, for monitoring:
one grouped query each, however many rows there are."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from store.models import Order, ReconciliationRun, Refund, WebhookAttempt, WebhookDelivery


@dataclass(frozen=True)
class OrderTally:
    kind: str
    status: str
    gateway: str
    orders: int
    # Of those, the ones flagged for an operator (a wrong amount, a trade that would not close).
    flagged: int


@dataclass(frozen=True)
class RefundTally:
    gateway: str
    status: str
    refunds: int


def order_tallies(session: Session) -> list[OrderTally]:
    """Orders by kind, status and gateway; groups without orders are absent."""
    kind, status, gateway = col(Order.kind), col(Order.status), col(Order.gateway)
    # SQLModel's `select` takes at most four columns: this one is SQLAlchemy's own.
    query = (
        select_columns(kind, status, gateway, func.count(), func.count(col(Order.flag_reason)))
        .group_by(kind, status, gateway)
        .order_by(kind, status, gateway)
    )
    return [
        OrderTally(kind=row[0], status=row[1], gateway=row[2], orders=row[3], flagged=row[4])
        for row in session.connection().execute(query)
    ]


def refund_tallies(session: Session) -> list[RefundTally]:
    """Refunds by gateway and status; groups without refunds are absent."""
    gateway, status = col(Refund.gateway), col(Refund.status)
    query = (
        select(gateway, status, func.count()).group_by(gateway, status).order_by(gateway, status)
    )
    return [
        RefundTally(gateway=gateway, status=status, refunds=refunds)
        for gateway, status, refunds in session.exec(query).all()
    ]


@dataclass(frozen=True)
class ReconciliationTally:
    finished_at: datetime
    # Findings of the latest run by kind (overdue_order, undecided_payment, …).
    findings: Counter[str]


def last_reconciliation(session: Session) -> ReconciliationTally | None:
    """What the latest reconciliation run found, or None before the first one."""
    run = session.exec(
        select(ReconciliationRun).order_by(col(ReconciliationRun.started_at).desc()).limit(1)
    ).first()
    if run is None:
        return None
    findings = Counter(finding["kind"] for finding in json.loads(run.report)["findings"])
    return ReconciliationTally(finished_at=run.finished_at, findings=findings)


def delivery_tallies(session: Session) -> dict[str, int]:
    """Webhook deliveries by status; statuses without deliveries are absent."""
    status = col(WebhookDelivery.status)
    return dict(session.exec(select(status, func.count()).group_by(status)).all())


def attempt_tallies(session: Session) -> dict[str, int]:
    """Webhook delivery attempts by outcome; outcomes without attempts are absent."""
    outcome = col(WebhookAttempt.outcome)
    return dict(session.exec(select(outcome, func.count()).group_by(outcome)).all())
