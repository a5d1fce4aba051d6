"""Data access for the callback door: the audit trail of every verified callback, and a
bounded tally of refused ones.

Strings here may come from unauthenticated requests, so each is cut to its column and rid of
NUL characters (which PostgreSQL's text cannot hold) before it is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from store.models import CallbackAttempt, CallbackRefusal

BODY_CHARS = 16384
REASON_CHARS = 500


def attempts_about(session: Session, order_id: str) -> Sequence[CallbackAttempt]:
    """The verified callbacks about an order, in the order they came."""
    return session.exec(
        select(CallbackAttempt)
        .where(CallbackAttempt.out_trade_no == order_id)
        .order_by(col(CallbackAttempt.received_at), col(CallbackAttempt.id))
    ).all()


def record_attempt(
    session: Session,
    *,
    gateway: str,
    body: bytes,
    outcome: str,
    now: datetime,
    reason: str | None = None,
    event_id: str | None = None,
    out_trade_no: str | None = None,
    trade_no: str | None = None,
    trade_status: str | None = None,
) -> None:
    """A callback and what became of it; what it is about is known only once verified."""
    # A plain INSERT, not an object added to the session: every notification writes one, and
    # the ORM's unit of work would cost as much as the rest of the door's statements.
    session.connection().execute(
        _ATTEMPT,
        {
            "gateway": gateway,
            "notify_id": _fit_optional(event_id, 128),
            "out_trade_no": _fit_optional(out_trade_no, 64),
            "trade_no": _fit_optional(trade_no, 64),
            "trade_status": _fit_optional(trade_status, 32),
            "outcome": outcome,
            "reason": _fit_optional(reason, REASON_CHARS),
            "body": _text(body),
            "received_at": now,
        },
    )


_ATTEMPT = insert(CallbackAttempt)


def record_refusal(
    session: Session, *, gateway: str, reason: str, body: bytes, now: datetime
) -> None:
    """Count a refused callback under its reason: the first body is kept, repeats only count.

    Anyone can knock on the door, so a refusal must not cost a row each: a flood of the same
    forgery is one row whose count grows.
    """
    reason = _fit(reason, REASON_CHARS)
    values = {
        "gateway": gateway,
        "reason_hash": hashlib.sha256(reason.encode()).hexdigest(),
        "reason": reason,
        "count": 1,
        "sample_body": _text(body),
        "first_seen": now,
        "last_seen": now,
    }
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(CallbackRefusal).values(**values)
    session.exec(
        statement.on_conflict_do_update(
            index_elements=["gateway", "reason_hash"],
            set_={"count": CallbackRefusal.count + 1, "last_seen": statement.excluded.last_seen},
        )
    )


def _text(body: bytes) -> str:
    return _fit(body[: BODY_CHARS * 4].decode("utf-8", errors="replace"), BODY_CHARS)


def _fit(value: str, chars: int) -> str:
    return value.replace("\x00", "\ufffd")[:chars]


def _fit_optional(value: str | None, chars: int) -> str | None:
    return None if value is None else _fit(value, chars)
