"""Data access for gateway breakers: workers record when a gateway's breaker opens or closes;
every API process reads which are open before it takes an order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from store.models import GatewayBreaker

REASON_CHARS = 500


def record_breaker(
    session: Session, *, gateway: str, is_open: bool, reason: str, now: datetime
) -> None:
    """The gateway's breaker is now open (or closed), for this reason.

    Several workers report on the same gateway, and their writes may land out of order: a
    report older than the one stored is dropped, so a late "open" cannot undo a newer "closed".
    """
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(GatewayBreaker).values(
        gateway=gateway, open=is_open, reason=reason[:REASON_CHARS], changed_at=now
    )
    session.exec(
        statement.on_conflict_do_update(
            index_elements=["gateway"],
            set_={
                "open": statement.excluded.open,
                "reason": statement.excluded.reason,
                "changed_at": statement.excluded.changed_at,
            },
            where=col(GatewayBreaker.changed_at) <= statement.excluded.changed_at,
        )
    )


def read_breakers(session: Session, *, open_only: bool = False) -> Sequence[GatewayBreaker]:
    """The recorded breakers (only the open ones if asked); a gateway never recorded has never
    opened."""
    query = select(GatewayBreaker).order_by(col(GatewayBreaker.gateway))
    if open_only:
        query = query.where(col(GatewayBreaker.open))
    return session.exec(query).all()
