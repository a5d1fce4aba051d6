"""Quote first, pay on submit: a deferred order's trade is made only when the buyer presses Pay,
and only while the order may still be paid at the price it was quoted.

The rules on SQLite and PostgreSQL; the saga on Temporal's time-skipping server against the
sandbox over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core.contracts import OrderEnding, OrderOutcome, PaymentNotice, PaymentStart
from core.vocabulary import Gateway, OrderStatus, PaymentTiming, order_workflow_id
from sandbox.china_time import parse_wall_time
from store import orders
from store.db import transaction
from store.models import Order
from tests.orders import DAY_CENTS, TRADE_EXTENSION, claim, order_request
from tests.rig import Rig, time_skipping_server
from workflows.order import OrderWorkflow

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
QUOTED = 3 * DAY_CENTS


def quote(engine: Engine, order_id: str, *, now: datetime = NOW, days: int = 3) -> list[str]:
    """Claim room-1 for a deferred order quoted for 15 minutes; the orders it superseded."""
    return claim(engine, order_id, now=now, days=days, payment=PaymentTiming.DEFERRED)


def start(
    engine: Engine,
    order_id: str,
    *,
    now: datetime = NOW,
    amount_cents: int = QUOTED,
    qr_code: str | None = None,
) -> str | None:
    expires_at = None if qr_code is None else now + timedelta(minutes=15)
    payable_until = None if expires_at is None else expires_at + TRADE_EXTENSION
    with transaction(engine) as session:
        return orders.start_payment(
            session,
            start=PaymentStart(
                order_id=order_id,
                amount_cents=amount_cents,
                qr_code=qr_code,
                expires_at=expires_at,
                payable_until=payable_until,
            ),
            now=now,
        )


def order_of(engine: Engine, order_id: str) -> Order:
    with transaction(engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None
        return order


def test_a_quote_supersedes_the_pending_orders_and_has_no_qr_code(engine: Engine) -> None:
    claim(engine, "o-immediate", now=NOW)
    assert quote(engine, "o-quoted") == ["o-immediate"]
    order = order_of(engine, "o-quoted")
    assert (order.status, order.payment, order.qr_code) == ("pending", "deferred", None)


def test_pay_records_the_trade_and_its_deadline_from_now(engine: Engine) -> None:
    quote(engine, "o-1")
    later = NOW + timedelta(minutes=10)
    assert start(engine, "o-1", now=later) is None
    checked = order_of(engine, "o-1")  # checked only: nothing recorded yet
    assert (checked.qr_code, checked.payable_until) == (None, None)
    assert start(engine, "o-1", now=later, qr_code="https://qr.example/o-1") is None
    order = order_of(engine, "o-1")
    assert order.qr_code == "https://qr.example/o-1"
    assert order.expires_at == later + timedelta(minutes=15)
    assert order.payable_until == order.expires_at + TRADE_EXTENSION
    # Pressing Pay again shows the same QR code.
    assert start(engine, "o-1", now=later) is None


@pytest.mark.parametrize(
    ("situation", "refusal"),
    [
        ("superseded", "superseded by o-newer"),
        ("price", "the price changed: 3 days now cost 32.70 CNY, not the 29.70 quoted"),
        ("lapsed", "the quote lapsed at 2026-11-24 09:15 UTC"),
        ("ended", "this order can no longer be paid: the order is expired"),
    ],
)
def test_a_stale_page_gets_a_reason_and_never_a_trade(
    engine: Engine, situation: str, refusal: str
) -> None:
    quote(engine, "o-stale")
    now, amount = NOW + timedelta(minutes=5), QUOTED
    if situation == "superseded":
        claim(engine, "o-newer", now=now)
    elif situation == "price":
        amount = QUOTED + 300
    elif situation == "lapsed":
        now = NOW + timedelta(minutes=15)
    else:
        with transaction(engine) as session:
            orders.end_order(
                session,
                ending=OrderEnding(
                    order_id="o-stale", status=OrderStatus.EXPIRED, reason="quote lapsed"
                ),
                now=now,
            )
    found = start(engine, "o-stale", now=now, amount_cents=amount, qr_code="https://qr/x")
    assert found is not None and refusal in found
    assert order_of(engine, "o-stale").qr_code is None


def test_a_renewal_quoted_while_active_is_refused_once_the_reservation_lapsed(
    engine: Engine,
) -> None:
    claim(engine, "o-booking", now=NOW, days=1)
    with transaction(engine) as session:
        settled = orders.settle_payment(
            session,
            notice=PaymentNotice(
                order_id="o-booking", trade_no="T1", amount_cents=DAY_CENTS, paid_at=None
            ),
            now=NOW,
        )
    assert settled.order_status == OrderStatus.PAID
    quote(engine, "o-renewal", now=NOW + timedelta(hours=23, minutes=55), days=1)
    refusal = start(engine, "o-renewal", now=NOW + timedelta(days=1, minutes=1), amount_cents=990)
    assert refusal == "this order can no longer be paid: a renewal no longer fits the reservation"


def test_an_immediate_order_needs_no_pay(engine: Engine) -> None:
    claim(engine, "o-immediate", now=NOW)
    assert start(engine, "o-immediate") == "the order's payment was made with it: it needs no other"


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as environment:
        yield environment


async def start_quote(
    env: WorkflowEnvironment, rig: Rig, order_id: str, *, reservation: str
) -> WorkflowHandle[OrderWorkflow, OrderOutcome]:
    # WeChat Pay's order exists at the gateway from its creation (Alipay's only once scanned):
    # whether a trade was made shows.
    request = order_request(
        order_id, reservation=reservation, gateway=Gateway.WECHATPAY
    ).model_copy(update={"payment": PaymentTiming.DEFERRED, "quote_ttl_seconds": 1800})
    handle = await env.client.start_workflow(
        OrderWorkflow.run, request, id=order_workflow_id(order_id), task_queue=rig.task_queue
    )
    instructions = await handle.execute_update(OrderWorkflow.payment_instructions)
    assert instructions.qr_code is None
    return handle


async def test_the_trade_is_made_on_pay_and_the_order_is_paid(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    with env.auto_time_skipping_disabled():
        handle = await start_quote(env, rig, "ord_quote_paid", reservation="room-q1")
        # Nothing exists at the gateway until the buyer presses Pay.
        assert not await rig.sandbox.knows("ord_quote_paid")
        pay = PaymentStart(order_id="ord_quote_paid", amount_cents=QUOTED)
        first, again = await asyncio.gather(
            handle.execute_update(OrderWorkflow.start_payment, pay),
            handle.execute_update(OrderWorkflow.start_payment, pay),
        )
        assert first.qr_code is not None and first == again
        recorded = order_of(rig.engine, "ord_quote_paid")
        assert recorded.qr_code == first.qr_code
        trade = await rig.sandbox.trade("ord_quote_paid")
        assert trade["status"] == "NOTPAY"
        # Kept: until when the gateway takes a payment for the trade, as it was asked to.
        assert recorded.payable_until is not None
        expiry = parse_wall_time(trade["expires_at"])
        assert abs(expiry - recorded.payable_until) < timedelta(seconds=1)
        await rig.sandbox.pay("ord_quote_paid")
    assert (await handle.result()).status == OrderStatus.PAID


async def test_a_superseded_quote_ends_without_a_trade(env: WorkflowEnvironment, rig: Rig) -> None:
    with env.auto_time_skipping_disabled():
        old = await start_quote(env, rig, "ord_quote_old", reservation="room-q2")
        new = await start_quote(env, rig, "ord_quote_new", reservation="room-q2")
        assert (await old.result()).status == OrderStatus.SUPERSEDED
        # A saga left waiting on this server, its worker gone, would keep it from skipping time.
        await new.execute_update(OrderWorkflow.cancel)
    assert (
        order_of(rig.engine, "ord_quote_old").status_reason == "superseded by order ord_quote_new"
    )
    assert not await rig.sandbox.knows("ord_quote_old")


async def test_a_changed_price_refuses_pay(env: WorkflowEnvironment, rig: Rig) -> None:
    with env.auto_time_skipping_disabled():
        handle = await start_quote(env, rig, "ord_quote_price", reservation="room-q3")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                OrderWorkflow.start_payment,
                PaymentStart(order_id="ord_quote_price", amount_cents=QUOTED + 300),
            )
        assert "the price changed" in str(refused.value.cause)
        await handle.execute_update(OrderWorkflow.cancel)
    assert (await handle.result()).status == OrderStatus.CANCELLED
    assert not await rig.sandbox.knows("ord_quote_price")


async def test_a_quote_nobody_pays_lapses_without_a_gateway_call(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    handle = await start_quote(env, rig, "ord_quote_lapsed", reservation="room-q4")
    assert (await handle.result()).status == OrderStatus.EXPIRED
    order = order_of(rig.engine, "ord_quote_lapsed")
    assert (order.status, order.status_reason) == ("expired", "its quote lapsed before it was paid")
    assert not await rig.sandbox.knows("ord_quote_lapsed")
