"""The callback door's records, on SQLite and on PostgreSQL: replayed nonces, and strings from
strangers that must fit their columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from store import callbacks, nonces
from store.db import transaction
from store.models import CallbackAttempt, CallbackRefusal, SeenNonce
from tests.databases import database

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def purging(name: str) -> str:
    """A nonce named `name…` whose sighting forgets expired nonces."""
    return next(f"{name}{n}" for n in count() if nonces.purges(f"{name}{n}"))


def sighted(engine: Engine, nonce: str, *, gateway: str = "wechatpay", at: datetime = NOW) -> bool:
    with transaction(engine) as session:
        return nonces.first_sighting(session, scope=gateway, nonce=nonce, now=at, window=WINDOW)


def test_a_nonce_is_taken_once_per_gateway(engine: Engine) -> None:
    assert sighted(engine, "n1")
    assert not sighted(engine, "n1", at=NOW + timedelta(minutes=4))
    assert sighted(engine, "n1", gateway="alipay")
    assert sighted(engine, "n2")


def test_nonces_older_than_the_window_are_forgotten(engine: Engine) -> None:
    assert sighted(engine, "old")
    new = purging("new")
    assert sighted(engine, new, at=NOW + WINDOW + timedelta(seconds=1))
    with transaction(engine) as session:
        kept = session.exec(select(SeenNonce.nonce)).all()
    assert list(kept) == [new]


def test_the_sightings_of_a_window_forget_more_than_the_window_before_held(engine: Engine) -> None:
    """Only some sightings purge, each a batch: the table still shrinks to a window's worth."""
    old = [f"old{n}" for n in range(3 * nonces.PURGE_BATCH)]
    for nonce in old:
        assert sighted(engine, nonce)
    later = NOW + WINDOW + timedelta(seconds=1)
    new = [f"new{n}" for n in range(len(old))]
    assert sum(nonces.purges(nonce) for nonce in new) < len(new) // 4
    for nonce in new:
        assert sighted(engine, nonce, at=later)
    with transaction(engine) as session:
        kept = session.exec(select(SeenNonce.nonce)).all()
    assert sorted(kept) == sorted(new)


def test_hostile_strings_are_stored_cut_and_without_nul(engine: Engine) -> None:
    body = b"\x00" * 10 + "é".encode() * 40000 + b"\xff\xfe"
    with transaction(engine) as session:
        callbacks.record_attempt(
            session,
            gateway="wechatpay",
            body=body,
            outcome="rejected",
            now=NOW,
            reason="r\x00" * 1000,
            event_id="e" * 1000,
            out_trade_no="\x00" * 100,
        )
    with transaction(engine) as session:
        attempt = session.exec(select(CallbackAttempt)).one()
    assert len(attempt.body) == callbacks.BODY_CHARS and "\x00" not in attempt.body
    assert attempt.reason is not None and len(attempt.reason) == callbacks.REASON_CHARS
    assert attempt.notify_id == "e" * 128 and attempt.out_trade_no == "\ufffd" * 64


def test_a_flood_of_one_refusal_is_one_row_that_counts(engine: Engine) -> None:
    for n in range(50):
        with transaction(engine) as session:
            callbacks.record_refusal(
                session,
                gateway="alipay",
                reason="signature does not verify",
                body=f"forgery {n}".encode(),
                now=NOW + timedelta(seconds=n),
            )
    with transaction(engine) as session:
        callbacks.record_refusal(
            session, gateway="alipay", reason="x\x00" * 600, body=b"\x00", now=NOW
        )
    with transaction(engine) as session:
        rows = session.exec(select(CallbackRefusal).order_by(col(CallbackRefusal.count))).all()
    assert [row.count for row in rows] == [1, 50]
    flood = rows[1]
    assert flood.sample_body == "forgery 0" and flood.last_seen == NOW + timedelta(seconds=49)
    assert len(rows[0].reason) == callbacks.REASON_CHARS and "\x00" not in rows[0].reason


def test_concurrent_sightings_do_not_wait_on_each_others_purge(tmp_path: Path) -> None:
    """Callbacks of unrelated orders purge the same expired nonces: one must not queue behind
    another's open transaction (PostgreSQL, where writers run at once)."""
    with database("postgresql", tmp_path) as engine:
        assert sighted(engine, "old")
        later = NOW + WINDOW + timedelta(seconds=1)
        a, b = purging("a"), purging("b")
        with transaction(engine) as first:
            assert nonces.first_sighting(
                first, scope="wechatpay", nonce=a, now=later, window=WINDOW
            )
            # The first has purged "old" and not committed: the second finds nothing to take.
            with transaction(engine) as second:
                second.connection().exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                assert nonces.first_sighting(
                    second, scope="wechatpay", nonce=b, now=later, window=WINDOW
                )
        with transaction(engine) as session:
            kept = session.exec(select(SeenNonce.nonce)).all()
        assert sorted(kept) == [a, b]
