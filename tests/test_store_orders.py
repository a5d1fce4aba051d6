"""The money rules of store.orders, on SQLite and on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from core.contracts import (
    ClaimRequest,
    OrderEnding,
    OrderRequest,
    PaymentNotice,
    RefundOrder,
    Settlement,
)
from core.vocabulary import Gateway, OrderKind, OrderStatus, refund_no_for
from store import orders
from store.db import transaction
from store.models import Payment, PaymentStatus, Refund, RefundStatus
from store.views import shown_order
from tests.orders import claim as claim_order

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def claim(engine: Engine, order_id: str, *, now: datetime = NOW, **choices: Any) -> list[str]:
    return claim_order(engine, order_id, now=now, **choices)


def pay(
    engine: Engine,
    order_id: str,
    trade_no: str,
    *,
    cents: int = 2970,
    now: datetime = NOW,
    gateway: Gateway = Gateway.ALIPAY,
) -> Settlement:
    notice = PaymentNotice(
        gateway=gateway, order_id=order_id, trade_no=trade_no, amount_cents=cents, paid_at=now
    )
    with transaction(engine) as session:
        return orders.settle_payment(session, notice=notice, now=now)


def status_of(engine: Engine, order_id: str) -> str:
    with transaction(engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None
        return order.status


def ledger(engine: Engine, reservation: str) -> tuple[int, int, int]:
    """Captured, refunded (succeeded) and paid-order amounts of a reservation, in cents."""
    with transaction(engine) as session:
        order_rows = orders.orders_of(session, reservation)
        ids = [order.id for order in order_rows]
        captured = sum(p.amount_cents for i in ids for p in orders.payments_of(session, i))
        refunded = sum(
            r.amount_cents
            for i in ids
            for r in orders.refunds_of(session, i)
            if r.status == RefundStatus.SUCCEEDED
        )
        paid = sum(o.amount_cents for o in order_rows if o.status == OrderStatus.PAID)
    return captured, refunded, paid


def test_a_new_order_supersedes_the_pending_ones(engine: Engine) -> None:
    assert claim(engine, "o1") == []
    assert claim(engine, "o2") == ["o1"]
    assert status_of(engine, "o1") == OrderStatus.SUPERSEDED
    with transaction(engine) as session:
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None and reservation.payable_order_id == "o2"


def test_a_retried_claim_reports_what_the_first_did(engine: Engine) -> None:
    claim(engine, "o1")
    assert claim(engine, "o2") == ["o1"]
    assert claim(engine, "o2") == ["o1"]
    assert status_of(engine, "o2") == OrderStatus.PENDING


def test_booking_activates_and_renewal_extends(engine: Engine) -> None:
    claim(engine, "o1")
    assert pay(engine, "o1", "t1").outcome == "paid"
    later = NOW + timedelta(days=1)
    claim(engine, "o2", days=2, now=later)
    with transaction(engine) as session:
        renewal = orders.get_order(session, "o2")
        assert renewal is not None and renewal.kind == OrderKind.RENEWAL
    assert pay(engine, "o2", "t2", cents=1980, now=later).outcome == "paid"
    with transaction(engine) as session:
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None
        assert reservation.valid_until == NOW + timedelta(days=5)
        assert reservation.valid_until.tzinfo is not None
        assert reservation.payable_order_id is None
    # What the API reads to say which kind it expects the next order to be.
    with engine.connect() as connection:
        active = [
            orders.is_reservation_active(connection, reservation_id=room, now=moment)
            for room, moment in (
                ("room-1", NOW + timedelta(days=5) - timedelta(seconds=1)),
                ("room-1", NOW + timedelta(days=5)),
                ("room-2", NOW),
            )
        ]
    assert active == [True, False, False]


def test_a_payment_for_a_superseded_order_is_refunded_once(engine: Engine) -> None:
    claim(engine, "o1")
    claim(engine, "o2")
    first = pay(engine, "o1", "t1")
    assert first.outcome == "refund" and first.refund is not None
    assert first.refund.refund_no == "rf_t1" and first.refund.amount_cents == 2970
    assert pay(engine, "o1", "t1").refund == first.refund  # decided once, asked twice
    with transaction(engine) as session:
        status = orders.complete_refund(session, refund=first.refund, now=NOW)
    assert status == OrderStatus.REFUNDED
    assert pay(engine, "o1", "t1").outcome == "settled_before"
    assert pay(engine, "o2", "t2").outcome == "paid"
    assert ledger(engine, "room-1") == (5940, 2970, 2970)


def test_a_payment_is_to_be_handed_over_until_marked_so_or_decided(engine: Engine) -> None:
    claim(engine, "o1")
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY, order_id="o1", trade_no="t1", amount_cents=2970, paid_at=NOW
    )

    def recorded() -> bool:
        with transaction(engine) as session:
            return orders.record_payment(session, notice=notice, now=NOW)

    assert recorded() and recorded()  # first seen, then seen again before any saga took it
    with engine.begin() as connection:
        orders.mark_handed_over(connection, notice=notice, now=NOW)
    assert not recorded()
    with transaction(engine) as session:
        assert orders.get_payee(session, "o1") == orders.Payee("alipay", "room-1", "booking")
        assert orders.get_payee(session, "o2") is None
    claim(engine, "o2", reservation="room-2")
    pay(engine, "o2", "t2")
    settled = PaymentNotice(
        gateway=Gateway.ALIPAY, order_id="o2", trade_no="t2", amount_cents=2970, paid_at=NOW
    )
    with transaction(engine) as session:
        assert not orders.record_payment(session, notice=settled, now=NOW)


def test_a_second_trade_on_a_paid_order_is_refunded_and_the_order_stays_paid(
    engine: Engine,
) -> None:
    claim(engine, "o1")
    assert pay(engine, "o1", "t1").outcome == "paid"
    second = pay(engine, "o1", "t2")
    assert second.outcome == "refund" and second.order_status == OrderStatus.PAID
    assert second.refund is not None
    with transaction(engine) as session:
        assert orders.complete_refund(session, refund=second.refund, now=NOW) == OrderStatus.PAID
    assert ledger(engine, "room-1") == (5940, 2970, 2970)


def test_an_order_is_shown_with_its_payments_in_turn_and_each_refund_with_its_trade(
    engine: Engine,
) -> None:
    claim(engine, "o1")
    assert pay(engine, "o1", "t1").outcome == "paid"
    # Two more trades, each refunded; the later trade's refund was made first.
    pay(engine, "o1", "t2", now=NOW + timedelta(minutes=2))
    pay(engine, "o1", "t3", cents=1, now=NOW + timedelta(minutes=1))

    with engine.connect() as connection:
        shown = shown_order(connection, "o1", public_base_url="https://pay.example/")
        assert shown_order(connection, "o2", public_base_url="https://pay.example") is None
    assert shown is not None and shown.request_fingerprint == "f"
    public = shown.public
    assert (public.order_id, public.status, public.amount) == ("o1", OrderStatus.PAID, "29.70")
    assert public.checkout_url is None and public.expires_at == NOW + timedelta(minutes=15)
    assert [(p.trade_no, p.amount, p.status, p.paid_at) for p in public.payments] == [
        ("t1", "29.70", PaymentStatus.ACCEPTED, NOW),
        ("t2", "29.70", PaymentStatus.REFUNDING, NOW + timedelta(minutes=2)),
        ("t3", "0.01", PaymentStatus.REFUNDING, NOW + timedelta(minutes=1)),
    ]
    assert [(r.refund_no, r.trade_no, r.amount, r.status) for r in public.refunds] == [
        (refund_no_for("t3"), "t3", "0.01", RefundStatus.PENDING),
        (refund_no_for("t2"), "t2", "29.70", RefundStatus.PENDING),
    ]


def test_one_trade_number_at_two_gateways_is_two_payments_each_refunded_at_its_own(
    engine: Engine,
) -> None:
    claim(engine, "o1", gateway=Gateway.ALIPAY)
    claim(engine, "o2", gateway=Gateway.WECHATPAY)
    refunded = pay(engine, "o1", "t1", gateway=Gateway.ALIPAY)
    assert refunded.refund is not None and refunded.refund.gateway == Gateway.ALIPAY
    assert pay(engine, "o2", "t1", gateway=Gateway.WECHATPAY).outcome == "paid"
    with transaction(engine) as session:
        status = orders.complete_refund(session, refund=refunded.refund, now=NOW)
        assert status == OrderStatus.REFUNDED
        payments = session.exec(select(Payment).where(Payment.trade_no == "t1")).all()
        assert sorted(p.gateway for p in payments) == [Gateway.ALIPAY, Gateway.WECHATPAY]
        order = orders.get_order(session, "o2")
        assert order is not None and order.gateway == Gateway.WECHATPAY
    assert ledger(engine, "room-1") == (5940, 2970, 2970)


def test_a_payment_of_another_amount_is_refunded_and_flags_the_order_once(
    engine: Engine,
) -> None:
    claim(engine, "o1")
    wrong = [pay(engine, "o1", trade, cents=1) for trade in ("t1", "t2")]
    assert [s.outcome for s in wrong] == ["refund", "refund"]
    assert [s.order_status for s in wrong] == [OrderStatus.PENDING] * 2
    for settlement in wrong:
        assert settlement.refund is not None and settlement.refund.amount_cents == 1
        with transaction(engine) as session:
            status = orders.complete_refund(session, refund=settlement.refund, now=NOW)
        # Still payable: the buyer may yet pay the right amount.
        assert status == OrderStatus.PENDING
    with transaction(engine) as session:
        order = orders.get_order(session, "o1")
        assert order is not None and order.flag_reason == "paid 0.01 for an order of 29.70"
    assert pay(engine, "o1", "t3").outcome == "paid"
    assert ledger(engine, "room-1") == (2972, 2, 2970)


def test_a_renewal_paid_after_the_reservation_lapsed_is_refunded(engine: Engine) -> None:
    claim(engine, "o1", days=1)
    pay(engine, "o1", "t1", cents=990)
    claim(engine, "o2", days=1, now=NOW + timedelta(hours=23))
    lapsed = NOW + timedelta(days=2)
    settlement = pay(engine, "o2", "t2", cents=990, now=lapsed)
    assert settlement.outcome == "refund"
    with transaction(engine) as session:
        order = orders.get_order(session, "o2")
        reservation = orders.get_reservation(session, "room-1")
        assert order is not None and "renewal no longer fits" in (order.status_reason or "")
        assert reservation is not None and reservation.payable_order_id is None


def test_ending_an_order_leaves_a_paid_one_paid(engine: Engine) -> None:
    claim(engine, "o1")
    pay(engine, "o1", "t1")
    ending = OrderEnding(order_id="o1", status=OrderStatus.EXPIRED, reason="timeout")
    with transaction(engine) as session:
        assert orders.end_order(session, ending=ending, now=NOW) == OrderStatus.PAID
    claim(engine, "o2")
    with transaction(engine) as session:
        ending = OrderEnding(order_id="o2", status=OrderStatus.EXPIRED, reason="timeout")
        assert orders.end_order(session, ending=ending, now=NOW) == OrderStatus.EXPIRED
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None and reservation.payable_order_id is None


def test_a_refused_refund_flags_the_order(engine: Engine) -> None:
    claim(engine, "o1")
    claim(engine, "o2")
    refund = pay(engine, "o1", "t1").refund
    assert refund is not None
    with transaction(engine) as session:
        orders.fail_refund(session, refund=refund, reason="TRADE_HAS_FINISHED", now=NOW)
        order = orders.get_order(session, "o1")
        payment = session.exec(select(Payment).where(Payment.trade_no == "t1")).one()
        assert order is not None and "TRADE_HAS_FINISHED" in (order.flag_reason or "")
        assert payment.status == PaymentStatus.REFUND_FAILED


def test_concurrent_claims_leave_exactly_one_pending_order(engine: Engine) -> None:
    ids = [f"o{n}" for n in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda order_id: claim(engine, order_id), ids))
    statuses = [status_of(engine, order_id) for order_id in ids]
    assert statuses.count(OrderStatus.PENDING) == 1
    assert statuses.count(OrderStatus.SUPERSEDED) == len(ids) - 1
    with transaction(engine) as session:
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None
        assert statuses[ids.index(reservation.payable_order_id or "")] == OrderStatus.PENDING


def test_concurrent_settlements_of_one_trade_decide_once(engine: Engine) -> None:
    for order_id in ("o1", "o2"):
        claim(engine, order_id)
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda _: pay(engine, "o2", "t2").outcome, range(12)))
        refunds = list(pool.map(lambda _: pay(engine, "o1", "t1").outcome, range(12)))
    assert outcomes.count("paid") == 1 and outcomes.count("settled_before") == 11
    assert set(refunds) == {"refund"}
    with transaction(engine) as session:
        assert len(session.exec(select(Payment)).all()) == 2
        assert len(session.exec(select(Refund)).all()) == 1


def test_concurrent_refund_completion_and_payment_lose_no_update(engine: Engine) -> None:
    """A refund completing while another trade pays the same order: the order ends paid, by
    whichever order the two transactions take the reservation's lock."""
    rounds = 8 if engine.dialect.name == "postgresql" else 3
    for n in range(rounds):
        order_id, reservation = f"o{n}", f"room-{n}"
        claim(engine, order_id, reservation=reservation)
        refund = pay(engine, order_id, f"wrong-{n}", cents=1).refund
        assert refund is not None
        race_refund_and_payment(engine, refund, trade_no=f"right-{n}")
        assert status_of(engine, order_id) == OrderStatus.PAID
        assert ledger(engine, reservation) == (2971, 1, 2970)


def race_refund_and_payment(engine: Engine, refund: RefundOrder, *, trade_no: str) -> None:
    start = Barrier(2)

    def complete() -> None:
        start.wait()
        with transaction(engine) as session:
            orders.complete_refund(session, refund=refund, now=NOW)

    def settle() -> None:
        start.wait()
        pay(engine, refund.order_id, trade_no)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(complete), pool.submit(settle)]:
            done.result()


def test_an_order_given_up_on_is_never_claimed_and_a_claimed_one_stands(engine: Engine) -> None:
    def claim_with_deadline(order_id: str, deadline: datetime) -> None:
        request = ClaimRequest(
            order=OrderRequest(
                order_id=order_id,
                reservation_id="room-1",
                days=1,
                amount_cents=990,
                currency="CNY",
                request_fingerprint="f",
                payment_timeout_seconds=900,
                payment_create_timeout_seconds=20,
            ),
            expires_at=NOW + timedelta(minutes=15),
            qr_code=f"https://qr.test/{order_id}",
            create_deadline=deadline,
        )
        with transaction(engine) as session:
            orders.claim_reservation(session, request=request, now=NOW)

    with transaction(engine) as session:
        assert not orders.abandon_creation(session, order_id="o-given-up", now=NOW)
    with pytest.raises(orders.CreationAbandoned, match="could not be made"):
        claim_with_deadline("o-given-up", NOW + timedelta(seconds=20))
    with pytest.raises(orders.CreationAbandoned, match="deadline"):
        claim_with_deadline("o-late", NOW)
    with transaction(engine) as session:
        # Refused claims leave nothing behind, not even the reservation.
        assert orders.get_reservation(session, "room-1") is None

    claim_with_deadline("o-made", NOW + timedelta(seconds=20))
    with transaction(engine) as session:
        assert orders.abandon_creation(session, order_id="o-made", now=NOW)
        made = orders.get_order(session, "o-made")
        assert made is not None and made.qr_code == "https://qr.test/o-made"
