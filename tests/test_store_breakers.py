"""Gateway breakers as every process sees them, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from store import breakers
from store.db import transaction

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def record(engine: Engine, gateway: str, is_open: bool, reason: str, at: datetime) -> None:
    with transaction(engine) as session:
        breakers.record_breaker(session, gateway=gateway, is_open=is_open, reason=reason, now=at)


def states(engine: Engine, *, open_only: bool = False) -> list[tuple[str, bool, str | None]]:
    with transaction(engine) as session:
        rows = breakers.read_breakers(session, open_only=open_only)
        return [(row.gateway, row.open, row.reason) for row in rows]


def test_a_breaker_opens_and_closes_in_one_row_per_gateway(engine: Engine) -> None:
    assert states(engine) == []
    record(engine, "wechatpay", True, "9 of 10 calls failed", NOW)
    record(engine, "alipay", False, "a call got through", NOW)
    assert states(engine, open_only=True) == [("wechatpay", True, "9 of 10 calls failed")]
    record(engine, "wechatpay", False, "a call got through", NOW + timedelta(seconds=5))
    assert states(engine) == [
        ("alipay", False, "a call got through"),
        ("wechatpay", False, "a call got through"),
    ]
    assert states(engine, open_only=True) == []
    with transaction(engine) as session:
        (alipay, _) = breakers.read_breakers(session)
    assert alipay.changed_at == NOW and alipay.changed_at.tzinfo is not None


def test_a_late_write_of_an_older_state_is_dropped(engine: Engine) -> None:
    # One worker closed the breaker; another's "open", decided earlier, lands afterwards.
    record(engine, "alipay", False, "a call got through", NOW + timedelta(seconds=1))
    record(engine, "alipay", True, "stale", NOW)
    assert states(engine) == [("alipay", False, "a call got through")]


def test_a_long_reason_is_cut_to_its_column(engine: Engine) -> None:
    record(engine, "alipay", True, "x" * 2000, NOW)
    assert states(engine)[0][2] == "x" * breakers.REASON_CHARS
