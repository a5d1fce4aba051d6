"""Counts of orders and refunds as the database holds them, for monitoring: one grouped query
each, however many rows there are."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from store.models import Order, Refund


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
