"""Data access for the callback door: the audit trail of every callback.

Strings here may come from unauthenticated requests, so each is cut to its column and rid of
NUL characters (which PostgreSQL's text cannot hold) before it is stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from store.models import CallbackAttempt

BODY_CHARS = 16384
REASON_CHARS = 500


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
    session.add(
        CallbackAttempt(
            gateway=gateway,
            notify_id=_fit_optional(event_id, 128),
            out_trade_no=_fit_optional(out_trade_no, 64),
            trade_no=_fit_optional(trade_no, 64),
            trade_status=_fit_optional(trade_status, 32),
            outcome=outcome,
            reason=_fit_optional(reason, REASON_CHARS),
            body=_text(body),
            received_at=now,
        )
    )


def _text(body: bytes) -> str:
    return _fit(body[: BODY_CHARS * 4].decode("utf-8", errors="replace"), BODY_CHARS)


def _fit(value: str, chars: int) -> str:
    return value.replace("\x00", "\ufffd")[:chars]


def _fit_optional(value: str | None, chars: int) -> str | None:
    return None if value is None else _fit(value, chars)
