"""The order saga on Temporal's time-skipping test server, against the sandbox over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from core.contracts import OrderOutcome, OrderRequest, PaymentNotice
from core.vocabulary import (
    Gateway,
    OrderStatus,
    late_payment_workflow_id,
    order_workflow_id,
    recovery_workflow_id,
)
from store import orders, reconciliation
from store.db import transaction
from store.models import Order
from tests.history_paths import record_distinct_paths
from tests.orders import order_request
from tests.rig import Rig, time_skipping_server
from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow
from workflows.recovery import RecoverOrderWorkflow


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as environment:
        yield environment


# What each gateway calls a paid trade, a trade closed unpaid, and its create call.
PAID = {Gateway.ALIPAY: "TRADE_SUCCESS", Gateway.WECHATPAY: "SUCCESS"}
CLOSED = {Gateway.ALIPAY: "TRADE_CLOSED", Gateway.WECHATPAY: "CLOSED"}
CREATE = {Gateway.ALIPAY: "alipay.trade.precreate", Gateway.WECHATPAY: "wechatpay.native"}
REFUND = {Gateway.ALIPAY: "alipay.trade.refund", Gateway.WECHATPAY: "wechatpay.refund"}
QUERY_AND_CLOSE = {
    Gateway.ALIPAY: ("alipay.trade.query", "alipay.trade.close"),
    Gateway.WECHATPAY: ("wechatpay.query", "wechatpay.close"),
}


@pytest.fixture(params=list(Gateway))
def gateway(request: pytest.FixtureRequest) -> Gateway:
    value: Gateway = request.param
    return value


async def start_order(
    env: WorkflowEnvironment,
    rig: Rig,
    order_id: str,
    reservation: str = "room-1",
    gateway: Gateway = Gateway.ALIPAY,
    payment_timeout_seconds: int = 900,
    **timing: int,
) -> WorkflowHandle[OrderWorkflow, OrderOutcome]:
    """`timing`: more of the request's seconds (late_payment_horizon_seconds, …)."""
    request = order_request(
        order_id,
        reservation=reservation,
        gateway=gateway,
        payment_timeout_seconds=payment_timeout_seconds,
        **timing,
    )
    handle = await env.client.start_workflow(
        OrderWorkflow.run, request, id=order_workflow_id(order_id), task_queue=rig.task_queue
    )
    for _ in range(500):
        with transaction(rig.engine) as session:
            order = orders.get_order(session, order_id)
            if order is not None and order.qr_code is not None:
                return handle
        await asyncio.sleep(0.02)
    raise AssertionError(f"{order_id} never got its QR code")


async def ended(rig: Rig, order_id: str) -> Order:
    """The order once it is no longer pending."""
    for _ in range(500):
        with transaction(rig.engine) as session:
            order = orders.get_order(session, order_id)
            if order is not None and order.status != OrderStatus.PENDING:
                return order
        await asyncio.sleep(0.02)
    raise AssertionError(f"{order_id} never ended")


def order_status(rig: Rig, order_id: str) -> str:
    with transaction(rig.engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None
        return order.status


async def test_an_unpaid_order_expires_after_the_gateway_is_asked(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    scanned = await start_order(env, rig, "ord_scanned", reservation="room-1")
    await rig.sandbox.scan("ord_scanned")
    never_scanned = await start_order(env, rig, "ord_unscanned", reservation="room-2")

    assert (await scanned.result()).status == OrderStatus.EXPIRED
    assert (await never_scanned.result()).status == OrderStatus.EXPIRED
    # The scanned trade was closed at the gateway; the unscanned one did not exist to close.
    assert (await rig.sandbox.trade("ord_scanned"))["status"] == "TRADE_CLOSED"
    assert (await rig.sandbox.trade("ord_unscanned"))["status"] is None
    assert order_status(rig, "ord_scanned") == OrderStatus.EXPIRED


async def test_an_unpaid_wechatpay_order_expires_and_its_trade_is_closed(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    # Unlike an Alipay QR code, a WeChat Pay order exists at the gateway from its creation.
    handle = await start_order(env, rig, "ord_wx_unpaid", gateway=Gateway.WECHATPAY)
    assert (await handle.result()).status == OrderStatus.EXPIRED
    assert (await rig.sandbox.trade("ord_wx_unpaid"))["status"] == "CLOSED"
    assert order_status(rig, "ord_wx_unpaid") == OrderStatus.EXPIRED


async def test_a_lost_notification_is_found_by_the_query(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    handle = await start_order(env, rig, f"ord_lost_{gateway}", gateway=gateway)
    await rig.sandbox.faults(drop_notifications=1)
    await rig.sandbox.pay(f"ord_lost_{gateway}")

    assert (await handle.result()).status == OrderStatus.PAID
    with transaction(rig.engine) as session:
        reservation = orders.get_reservation(session, "room-1")
        assert reservation is not None and reservation.valid_until is not None


async def test_a_payment_racing_the_close_wins(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    handle = await start_order(env, rig, f"ord_race_{gateway}", gateway=gateway)
    await rig.sandbox.scan(f"ord_race_{gateway}")
    await rig.sandbox.faults(pay_before_close=True, drop_notifications=1)

    assert (await handle.result()).status == OrderStatus.PAID
    assert (await rig.sandbox.trade(f"ord_race_{gateway}"))["status"] == PAID[gateway]
    assert await rig.sandbox.net_captured([f"ord_race_{gateway}"]) == Decimal("29.70")


async def test_a_notified_payment_pays_the_order_at_once(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    handle = await start_order(env, rig, f"ord_paid_{gateway}", gateway=gateway)
    trade = await rig.sandbox.pay(f"ord_paid_{gateway}")
    notice = PaymentNotice(
        gateway=gateway,
        order_id=f"ord_paid_{gateway}",
        trade_no=trade["trade_no"],
        amount_cents=2970,
        paid_at=None,
    )
    for _ in range(3):  # the gateway notifies at least once
        await handle.signal(OrderWorkflow.payment_notified, notice)

    assert (await handle.result()).status == OrderStatus.PAID
    with transaction(rig.engine) as session:
        assert len(orders.payments_of(session, f"ord_paid_{gateway}")) == 1
        assert orders.refunds_of(session, f"ord_paid_{gateway}") == []
    # Only as it began did the saga write a patch's marker (an event, and a write of the UI's
    # TemporalChangeVersion, each): a paid order's saga asks for no change as it ends.
    markers = [
        event.marker_recorded_event_attributes.marker_name
        for event in (await handle.fetch_history()).events
        if event.HasField("marker_recorded_event_attributes")
    ]
    assert markers.count("core_patch") == 1


async def test_paying_a_superseded_order_refunds_it_once(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    with env.auto_time_skipping_disabled():  # no order may time out in this story
        first = await start_order(env, rig, "ord_old")
        await rig.sandbox.scan("ord_old")
        second = await start_order(env, rig, "ord_new")
        assert (await first.result()).status == OrderStatus.SUPERSEDED
        assert (await rig.sandbox.trade("ord_old"))["status"] == "TRADE_CLOSED"

        third = await start_order(env, rig, "ord_newest")
        assert (await second.result()).status == OrderStatus.SUPERSEDED
        paid = await rig.sandbox.pay("ord_newest")
        await third.signal(
            OrderWorkflow.payment_notified,
            PaymentNotice(
                order_id="ord_newest", trade_no=paid["trade_no"], amount_cents=2970, paid_at=None
            ),
        )
        assert (await third.result()).status == OrderStatus.PAID

        # An unscanned QR code can still be paid after its close: the payment comes late,
        # when its saga has ended, and two late-payment sagas race to settle it.
        late_trade = await rig.sandbox.pay("ord_new")
        notice = PaymentNotice(
            order_id="ord_new", trade_no=late_trade["trade_no"], amount_cents=2970, paid_at=None
        )
        outcomes = await asyncio.gather(
            *(
                env.client.execute_workflow(
                    LatePaymentWorkflow.run,
                    notice,
                    id=f"{late_payment_workflow_id(notice.gateway, notice.trade_no)}-{n}",
                    task_queue=rig.task_queue,
                )
                for n in range(2)
            )
        )
    assert {outcome.status for outcome in outcomes} == {OrderStatus.REFUNDED}
    refunds = (await rig.sandbox.trade("ord_new"))["refunds"]
    assert [(r["out_request_no"], r["refund_amount"]) for r in refunds] == [
        (f"rf_{late_trade['trade_no']}", "29.70")
    ]
    net = await rig.sandbox.net_captured(["ord_old", "ord_new", "ord_newest"])
    assert net == Decimal("29.70")  # captured − refunded = the one paid order


async def test_an_operator_cancelling_the_saga_cancels_the_order(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    with env.auto_time_skipping_disabled():
        handle = await start_order(env, rig, f"ord_operator_{gateway}", gateway=gateway)
        await rig.sandbox.scan(f"ord_operator_{gateway}")
        await handle.cancel()
        assert (await handle.result()).status == OrderStatus.CANCELLED
    assert order_status(rig, f"ord_operator_{gateway}") == OrderStatus.CANCELLED
    assert (await rig.sandbox.trade(f"ord_operator_{gateway}"))["status"] == CLOSED[gateway]


# The saga watches for late payments up to a horizon; the gateway's last word is due 30 s after
# the trade can no longer be paid, or at the horizon if that comes first.
@pytest.mark.parametrize("horizon_seconds", [90000, 5])
async def test_a_late_payment_never_notified_is_found_once_the_trade_can_no_longer_be_paid(
    env: WorkflowEnvironment, rig: Rig, horizon_seconds: int
) -> None:
    order_id = f"ord_unheard_{horizon_seconds}"
    with env.auto_time_skipping_disabled():
        handle = await start_order(
            env,
            rig,
            order_id,
            reservation=f"room-unheard-{horizon_seconds}",
            late_payment_horizon_seconds=horizon_seconds,
            deadline_extension_seconds=3600,
        )
        assert await handle.execute_update(OrderWorkflow.cancel) == OrderStatus.CANCELLED
        # Never scanned, the QR code is still payable after its close; every notification of
        # the payment is lost.
        await rig.sandbox.faults(drop_notifications=1)
        paid = await rig.sandbox.pay(order_id)
    # Asked once the trade can no longer be paid, the gateway tells.
    assert (await handle.result()).status == OrderStatus.REFUNDED
    record_distinct_paths([await handle.fetch_history()])
    refunds = (await rig.sandbox.trade(order_id))["refunds"]
    assert [refund["out_request_no"] for refund in refunds] == [f"rf_{paid['trade_no']}"]
    assert await rig.sandbox.net_captured([order_id]) == Decimal(0)
    assert order_status(rig, order_id) == OrderStatus.REFUNDED


async def test_a_recovered_orders_trade_paid_unheard_after_its_close_is_found_at_its_expiry(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    order_id = "ord_recovered_unheard"
    with env.auto_time_skipping_disabled():
        saga = await start_order(
            env, rig, order_id, reservation="room-recovered", deadline_extension_seconds=3600
        )
        # Its first workflow task is over once the API could have its QR code: a saga
        # terminated within it leaves the test server's clock held, and no time is skipped.
        await saga.execute_update(OrderWorkflow.payment_instructions)
        await saga.terminate("an operator stopped it by mistake")
        with transaction(rig.engine) as session:
            order = orders.get_order(session, order_id)
            assert order is not None
            # What reconciliation finds once the order is past its deadline.
            [overdue] = reconciliation.overdue_orders(
                session, deadline_before=order.expires_at + timedelta(seconds=1), limit=10
            )
        assert overdue.payable_until == order.expires_at + timedelta(seconds=3600)
        recovery = await env.client.start_workflow(
            RecoverOrderWorkflow.run,
            overdue,
            id=recovery_workflow_id(order_id),
            task_queue=rig.task_queue,
        )
        assert (await ended(rig, order_id)).status == OrderStatus.EXPIRED
        # Never scanned, the QR code is still payable after its close; every notification of
        # the payment is lost.
        await rig.sandbox.faults(drop_notifications=1)
        paid = await rig.sandbox.pay(order_id)
    # Asked once more when the trade can no longer be paid, the gateway tells.
    assert (await recovery.result()).status == OrderStatus.REFUNDED
    record_distinct_paths([await recovery.fetch_history()])
    refunds = (await rig.sandbox.trade(order_id))["refunds"]
    assert [refund["out_request_no"] for refund in refunds] == [f"rf_{paid['trade_no']}"]
    assert await rig.sandbox.net_captured([order_id]) == Decimal(0)
    assert order_status(rig, order_id) == OrderStatus.REFUNDED


async def test_a_cancel_that_comes_while_an_overdue_order_is_checked_cancels_it(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    with env.auto_time_skipping_disabled():
        # Past its deadline, the saga asks the gateway, which fails twice: the cancel comes
        # while it asks.
        await rig.sandbox.faults(fail_methods={"alipay.trade.query": 2})
        handle = await start_order(
            env, rig, "ord_overdue_cancel", reservation="room-overdue", payment_timeout_seconds=1
        )
        for _ in range(200):
            if (await rig.sandbox.armed_faults())["fail_methods"]["alipay.trade.query"] < 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the saga never asked the gateway past the deadline")
        cancelled = handle.execute_update(OrderWorkflow.cancel)
        assert await asyncio.wait_for(cancelled, 30) == OrderStatus.CANCELLED
        await handle.result()
    assert order_status(rig, "ord_overdue_cancel") == OrderStatus.CANCELLED
    record_distinct_paths([await handle.fetch_history()])


async def test_gateway_failures_are_retried_and_a_refund_still_happens_once(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    with env.auto_time_skipping_disabled():
        await rig.sandbox.faults(fail_methods={CREATE[gateway]: 2}, fail_mode="http_503")
        old = await start_order(env, rig, f"ord_flaky_old_{gateway}", gateway=gateway)
        assert (await rig.sandbox.armed_faults())["fail_methods"][CREATE[gateway]] == 0

        # The buyer pays the old order just as a newer one closes it, and the refund is made
        # at the gateway while its answers say it failed, twice: the retries carry the same
        # refund number, so the money goes back once.
        await rig.sandbox.scan(f"ord_flaky_old_{gateway}")
        await rig.sandbox.faults(
            pay_before_close=True,
            drop_notifications=1,
            fail_methods={REFUND[gateway]: 2},
            fail_mode="applied_then_system_error",
        )
        await start_order(env, rig, f"ord_flaky_new_{gateway}", gateway=gateway)
        assert (await old.result()).status == OrderStatus.REFUNDED
    assert (await rig.sandbox.armed_faults())["fail_methods"][REFUND[gateway]] == 0
    trade = await rig.sandbox.trade(f"ord_flaky_old_{gateway}")
    assert trade["refunded_amount"] == "29.70" and len(trade["refunds"]) == 1


async def test_a_gateway_that_cannot_create_the_payment_in_time_leaves_nothing_made(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    # Every attempt fails at once. The step must still end at the creation deadline: the
    # API's 503 waits for it, and an order whose payment cannot be made must never be made.
    order_id = f"ord_uncreatable_{gateway}"
    await rig.sandbox.faults(fail_methods={CREATE[gateway]: 1000}, fail_mode="http_503")
    request = order_request(
        order_id,
        reservation=f"room-uncreatable-{gateway}",
        gateway=gateway,
        payment_create_timeout_seconds=3,
    )
    # Asked as the API asks: the update that waits for the QR code starts the saga.
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        request,
        id=order_workflow_id(order_id),
        task_queue=rig.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    with env.auto_time_skipping_disabled():
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await asyncio.wait_for(
                env.client.execute_update_with_start_workflow(
                    OrderWorkflow.payment_instructions, start_workflow_operation=start
                ),
                30,
            )
        outcome = await asyncio.wait_for((await start.workflow_handle()).result(), 30)
    assert "could not create the payment" in str(refused.value.cause)
    assert outcome.status == OrderStatus.CANCELLED
    # It was tried again and again, and nothing exists of it: no trade, no order, no claim.
    assert (await rig.sandbox.armed_faults())["fail_methods"][CREATE[gateway]] <= 1000 - 2
    assert not await rig.sandbox.knows(order_id)
    with transaction(rig.engine) as session:
        assert orders.get_order(session, order_id) is None
        assert orders.get_reservation(session, f"room-uncreatable-{gateway}") is None


async def test_a_gateway_refusing_the_close_ends_the_order_flagged_and_refunds_later(
    env: WorkflowEnvironment, rig: Rig, gateway: Gateway
) -> None:
    order_id = f"ord_refused_{gateway}"
    # In real time: the sagas other tests left waiting on this server can keep it from
    # skipping ahead, and a short payment timeout needs no skipping.
    with env.auto_time_skipping_disabled():
        handle = await start_order(env, rig, order_id, gateway=gateway, payment_timeout_seconds=2)
        await rig.sandbox.scan(order_id)
        await rig.sandbox.faults(
            fail_methods=dict.fromkeys(QUERY_AND_CLOSE[gateway], 1000), fail_mode="refused"
        )
        order = await ended(rig, order_id)
        assert order.status == OrderStatus.EXPIRED
        assert "refused to close" in (order.flag_reason or "")
        # Flagged, its saga waits for an operator (tests/test_operators.py); here it is stopped,
        # so that the payment that still comes is one nobody's saga is there for.
        await handle.terminate("stopped by an operator")

    # The trade stayed open at the gateway, and the buyer pays it after all (late, the QR code
    # honoured past its time): refunded, once.
    await rig.sandbox.faults(accept_expired_qr=True)
    trade = await rig.sandbox.pay(order_id)
    notice = PaymentNotice(
        gateway=gateway,
        order_id=order_id,
        trade_no=trade["trade_no"],
        amount_cents=2970,
        paid_at=None,
    )
    with env.auto_time_skipping_disabled():
        for _ in range(2):
            outcome = await env.client.execute_workflow(
                LatePaymentWorkflow.run,
                notice,
                id=late_payment_workflow_id(gateway, notice.trade_no),
                task_queue=rig.task_queue,
            )
            assert outcome.status == OrderStatus.REFUNDED
    assert len((await rig.sandbox.trade(order_id))["refunds"]) == 1


async def test_an_order_the_api_gave_up_on_is_never_made_and_its_trade_is_closed(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    # The API answered 503 before any worker took the saga; then one does, in time.
    with transaction(rig.engine) as session:
        assert not orders.abandon_creation(session, order_id="ord_given_up", now=datetime.now(UTC))
    request = OrderRequest(
        order_id="ord_given_up",
        reservation_id="room-given-up",
        days=3,
        amount_cents=2970,
        currency="CNY",
        gateway=Gateway.WECHATPAY,
        request_fingerprint="f",
        payment_timeout_seconds=900,
        payment_create_timeout_seconds=20,
    )
    outcome = await env.client.execute_workflow(
        OrderWorkflow.run,
        request,
        id=order_workflow_id("ord_given_up"),
        task_queue=rig.task_queue,
    )
    assert outcome.status == OrderStatus.CANCELLED
    with transaction(rig.engine) as session:
        assert orders.get_order(session, "ord_given_up") is None
        assert orders.get_reservation(session, "room-given-up") is None
    # The payment was created first, and withdrawn: nobody can pay it.
    assert (await rig.sandbox.trade("ord_given_up"))["status"] == "CLOSED"
