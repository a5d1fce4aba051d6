"""What operators see and do, on the real Temporal dev server (updates and visibility are real
there): true search attributes, summaries and details, the four operator actions with their
validators, and reconciliation healing an order whose saga and notification were both lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.sagas import SagaActivities
from core.contracts import (
    DeadlineExtension,
    OrderOutcome,
    PaymentNotice,
    Reconciliation,
    RefundRetry,
    Resolution,
)
from core.settings import Settings
from core.vocabulary import (
    RECONCILE_WORKFLOW_ID,
    Gateway,
    OrderStatus,
    order_workflow_id,
    recovery_workflow_id,
)
from paysaga.temporal_server import FAST_POLLING, installed_binary
from paysaga.worker import schedule_reconciliation
from store import orders, reconciliation
from store.db import transaction
from tests.orders import order_request
from tests.rig import Rig
from workflows import search_attributes
from workflows.order import OrderWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.recovery import RecoverOrderWorkflow

GATEWAY_CALLS = {Gateway.ALIPAY: ("alipay.trade.query", "alipay.trade.close")}


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_extra_args=[
            arg for value in FAST_POLLING for arg in ("--dynamic-config-value", value)
        ],
    )
    yield environment
    await environment.shutdown()


async def start_order(
    env: WorkflowEnvironment,
    rig: Rig,
    reservation: str,
    *,
    timeout: int = 60,
    horizon: int = 0,
    extension: int = 0,
    kind: str | None = None,
) -> tuple[str, WorkflowHandle[OrderWorkflow, OrderOutcome]]:
    """An order started as the API starts it, once its QR code exists."""
    order_id = f"ord_{uuid.uuid4().hex[:24]}"
    request = order_request(
        order_id,
        reservation=reservation,
        payment_timeout_seconds=timeout,
        late_payment_horizon_seconds=horizon,
        deadline_extension_seconds=extension,
    )
    handle = await env.client.start_workflow(
        OrderWorkflow.run,
        request,
        id=order_workflow_id(order_id),
        task_queue=rig.task_queue,
        search_attributes=search_attributes.of_order(
            order_id,
            gateway=Gateway.ALIPAY,
            reservation_id=reservation,
            status="pending",
            kind=kind,
        ),
        static_summary=f"booking 3 days, 29.70 CNY, {reservation}",
    )
    await handle.execute_update(OrderWorkflow.payment_instructions)
    return order_id, handle


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(150):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def listed(env: WorkflowEnvironment, query: str) -> list[str]:
    return [execution.id async for execution in env.client.list_workflows(query)]


async def attributes(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    described = await handle.describe()
    return {key.name: described.typed_search_attributes.get(key) for key in search_attributes.ALL}


async def details(handle: WorkflowHandle[Any, Any]) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert isinstance(metadata, WorkflowMetadata)
    return metadata.current_details


def notice_of(order_id: str, trade: dict[str, Any], amount_cents: int = 2970) -> PaymentNotice:
    return PaymentNotice(
        gateway=Gateway.ALIPAY,
        order_id=order_id,
        trade_no=trade["trade_no"],
        amount_cents=amount_cents,
        paid_at=None,
    )


async def test_an_order_refunded_late_reads_refunded_wherever_operators_look(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    old_id, old = await start_order(env, rig, room, horizon=30)
    new_id, new = await start_order(env, rig, room, horizon=30)

    await eventually(
        lambda: _status_is(old, OrderStatus.SUPERSEDED), "the old saga reads superseded"
    )
    assert "superseded: a late payment is refunded until" in await details(old)
    # The old QR code was never scanned: at Alipay it can still be paid after its close.
    late = await rig.sandbox.pay(old_id)
    await old.signal(OrderWorkflow.payment_notified, notice_of(old_id, late))
    await eventually(lambda: _status_is(old, OrderStatus.REFUNDED), "refunded by its own saga")

    assert await attributes(old) == {
        "OrderId": old_id,
        "ReservationId": room,
        "OrderStatus": "refunded",
        "OrderKind": "booking",
        "Gateway": "alipay",
        "Flagged": False,
    }
    assert (await attributes(new))["OrderStatus"] == "pending"
    assert await (await old.describe()).static_summary() == f"booking 3 days, 29.70 CNY, {room}"
    assert "waiting for payment until" in await details(new)

    async def refunded_listed() -> bool:
        return await listed(env, f'OrderStatus="refunded" AND ReservationId="{room}"') == [
            order_workflow_id(old_id)
        ]

    await eventually(refunded_listed, "OrderStatus='refunded' lists exactly the refunded order")
    await eventually(
        lambda: _equal(listed(env, f'OrderId="{new_id}"'), [order_workflow_id(new_id)]),
        "OrderId lists the order's workflow",
    )
    with transaction(rig.engine) as session:
        order = orders.get_order(session, old_id)
        assert order is not None and order.status == OrderStatus.REFUNDED
    await _stop(old, new)


async def test_the_kind_the_api_expected_is_written_again_only_if_the_claim_decided_otherwise(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    # A reservation never paid for is booked. The API reads it before the saga starts: it can
    # be wrong (the reservation lapsed in between), and sagas started before it said any kind
    # at all must still be found by theirs.
    room = f"room-{uuid.uuid4().hex[:8]}"
    _, expected = await start_order(env, rig, f"{room}-a", kind="booking")
    _, mistaken = await start_order(env, rig, f"{room}-b", kind="renewal")
    _, unsaid = await start_order(env, rig, f"{room}-c")

    for saga, rewritten in ((expected, 0), (mistaken, 1), (unsaid, 1)):
        assert (await attributes(saga))["OrderKind"] == "booking"
        assert await _kind_upserts(saga) == rewritten
    await _stop(expected, mistaken, unsaid)


async def _kind_upserts(saga: WorkflowHandle[Any, Any]) -> int:
    history = await saga.fetch_history()
    return sum(
        search_attributes.ORDER_KIND.name
        in event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        for event in history.events
        if event.HasField("upsert_workflow_search_attributes_event_attributes")
    )


async def test_operators_move_a_deadline_within_the_trades_life_and_are_told_why_not(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    # It watches for late payments once cancelled: its saga still answers operators then.
    order_id, saga = await start_order(
        env, rig, f"room-{uuid.uuid4().hex[:8]}", horizon=30, extension=60
    )
    with transaction(rig.engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None
        deadline = order.expires_at

    later = deadline + timedelta(seconds=30)
    moved = await saga.execute_update(
        OrderWorkflow.extend_deadline, DeadlineExtension(until=later, note="buyer on the phone")
    )
    assert moved == later
    with transaction(rig.engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None and order.expires_at == later
        [action] = orders.actions_on(session, order_id)
        assert (action.action, action.note, action.until) == (
            "extend_deadline",
            "buyer on the phone",
            later,
        )
    await eventually(
        lambda: _contains(details(saga), f"{later:%Y-%m-%d %H:%M} UTC"), "details say so"
    )

    refusals = {
        "past the trade's life": DeadlineExtension(until=deadline + timedelta(seconds=61)),
        "earlier": DeadlineExtension(until=deadline),
    }
    for expected, extension in (
        ("cannot move past", refusals["past the trade's life"]),
        ("can only move later", refusals["earlier"]),
    ):
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.execute_update(OrderWorkflow.extend_deadline, extension)
        assert expected in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await saga.execute_update(OrderWorkflow.retry_refund, RefundRetry())
    assert "nothing to retry" in str(refused.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await saga.execute_update(OrderWorkflow.resolve, Resolution(action="accept", note="ok"))
    assert "not flagged" in str(refused.value.cause)

    assert await saga.execute_update(OrderWorkflow.cancel) == OrderStatus.CANCELLED
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await saga.execute_update(
            OrderWorkflow.extend_deadline,
            DeadlineExtension(until=later + timedelta(seconds=1)),
        )
    assert "cancelled, not pending" in str(refused.value.cause)
    await _stop(saga)


async def test_a_refused_refund_is_retried_by_an_operator_and_the_flag_goes(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    old_id, old = await start_order(env, rig, room, horizon=30)
    _, new = await start_order(env, rig, room)
    await eventually(lambda: _status_is(old, OrderStatus.SUPERSEDED), "superseded")
    late = await rig.sandbox.pay(old_id)
    await rig.sandbox.faults(fail_methods={"alipay.trade.refund": 1}, fail_mode="refused")
    await old.signal(OrderWorkflow.payment_notified, notice_of(old_id, late))
    await eventually(lambda: _flagged(old), "flagged once the gateway refused the refund")
    assert "retry its refund" in await details(old)

    status = await old.execute_update(OrderWorkflow.retry_refund, RefundRetry(note="fixed"))
    assert status == OrderStatus.REFUNDED
    now_reads = await attributes(old)
    assert (now_reads["OrderStatus"], now_reads["Flagged"]) == ("refunded", False)
    with transaction(rig.engine) as session:
        order = orders.get_order(session, old_id)
        assert order is not None and order.flag_reason is None
        [refund] = orders.refunds_of(session, old_id)
        assert refund.status == "succeeded"
        assert [a.action for a in orders.actions_on(session, old_id)] == ["retry_refund"]
    assert len((await rig.sandbox.trade(old_id))["refunds"]) == 1
    await _stop(old, new)


async def test_a_flagged_paid_order_is_refunded_by_an_operator_and_its_days_taken_back(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    order_id, saga = await start_order(env, rig, room)
    with transaction(rig.engine) as session:
        # As the callback door flags an order whose payment came without an amount.
        orders.flag_order(
            session, order_id=order_id, reason="a payment without an amount", now=_now()
        )
    trade = await rig.sandbox.pay(order_id)
    await saga.signal(OrderWorkflow.payment_notified, notice_of(order_id, trade))
    await eventually(lambda: _flagged(saga), "paid, and flagged: it waits for an operator")
    assert (await attributes(saga))["OrderStatus"] == "paid"

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await saga.execute_update(OrderWorkflow.resolve, Resolution(action="refund", note=" "))
    assert "needs a note" in str(refused.value.cause)
    resolution = Resolution(action="refund", note="the buyer paid twice by bank transfer")
    assert await saga.execute_update(OrderWorkflow.resolve, resolution) == OrderStatus.REFUNDED
    assert (await saga.result()).status == OrderStatus.REFUNDED
    assert {k: v for k, v in (await attributes(saga)).items() if k != "OrderId"} == {
        "ReservationId": room,
        "OrderStatus": "refunded",
        "OrderKind": "booking",
        "Gateway": "alipay",
        "Flagged": False,
    }
    with transaction(rig.engine) as session:
        reservation = orders.get_reservation(session, room)
        assert reservation is not None and not orders.is_active(reservation, _now())
        [action] = orders.actions_on(session, order_id)
        assert (action.action, action.note) == ("refund", resolution.note)
    assert len((await rig.sandbox.trade(order_id))["refunds"]) == 1


async def test_a_flagged_unpaid_order_is_accepted_with_a_note_and_its_saga_ends(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    order_id, saga = await start_order(env, rig, f"room-{uuid.uuid4().hex[:8]}", timeout=2)
    await rig.sandbox.scan(order_id)
    await rig.sandbox.faults(
        fail_methods=dict.fromkeys(GATEWAY_CALLS[Gateway.ALIPAY], 1000), fail_mode="refused"
    )
    await eventually(lambda: _flagged(saga), "expired flagged: the gateway refused the close")
    await rig.sandbox.faults()
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await saga.execute_update(OrderWorkflow.resolve, Resolution(action="refund", note="x"))
    assert "only a paid order" in str(refused.value.cause)

    accepted = Resolution(action="accept", note="closed by hand in the merchant portal")
    assert await saga.execute_update(OrderWorkflow.resolve, accepted) == OrderStatus.EXPIRED
    assert (await saga.result()).status == OrderStatus.EXPIRED
    assert (await attributes(saga))["Flagged"] is False
    with transaction(rig.engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None and order.flag_reason is None


async def test_reconciliation_settles_a_payment_whose_notification_and_saga_were_lost(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    order_id, saga = await start_order(env, rig, f"room-{uuid.uuid4().hex[:8]}", timeout=2)
    await saga.terminate("an operator stopped it by mistake")
    # Paid at the gateway, and its notification lost (nobody listens at the notify_url).
    trade = await rig.sandbox.pay(order_id)
    await asyncio.sleep(2.5)  # past the order's deadline, with no saga to end it

    report = await env.client.execute_workflow(
        ReconcileWorkflow.run,
        Reconciliation(older_than_seconds=0),
        id=f"reconcile-{uuid.uuid4().hex}",
        task_queue=rig.task_queue,
    )
    [found] = [finding for finding in report.findings if finding.order_id == order_id]
    assert found.kind == "overdue_order" and "recovery started" in found.action
    recovered = env.client.get_workflow_handle_for(
        RecoverOrderWorkflow.run, recovery_workflow_id(order_id)
    )
    assert (await recovered.result()).status == OrderStatus.PAID
    with transaction(rig.engine) as session:
        order = orders.get_order(session, order_id)
        assert order is not None and order.status == OrderStatus.PAID
        [payment] = orders.payments_of(session, order_id)
        assert payment.trade_no == trade["trade_no"]
        [run] = reconciliation.recent_runs(session, limit=1)
        assert run.workflow_run_id == report.workflow_run_id and run.findings >= 1
    assert (await attributes(recovered))["OrderStatus"] == "paid"


async def test_a_recovery_waiting_for_the_gateways_last_word_keeps_its_order_in_hand(
    env: WorkflowEnvironment, rig: Rig
) -> None:
    # Two orders whose sagas were stopped by mistake; reconciliation recovers the first.
    recovered_id, saga = await start_order(env, rig, f"room-{uuid.uuid4().hex[:8]}", timeout=1)
    forsaken_id, other = await start_order(env, rig, f"room-{uuid.uuid4().hex[:8]}", timeout=60)
    for handle in (saga, other):
        await handle.terminate("an operator stopped it by mistake")
    await asyncio.sleep(1.5)  # past the first order's deadline, not the second's
    with transaction(rig.engine) as session:
        [overdue] = reconciliation.overdue_orders(session, deadline_before=_now(), limit=10)
    assert overdue.order_id == recovered_id
    recovery = await env.client.start_workflow(
        RecoverOrderWorkflow.run,
        overdue,
        id=recovery_workflow_id(recovered_id),
        task_queue=rig.task_queue,
    )
    # Its order expired, it waits for the trade's expiry to ask the gateway once more.
    await eventually(lambda: _contains(details(recovery), "once more"), "the recovery waits")
    with transaction(rig.engine) as session:
        order = orders.get_order(session, recovered_id)
        assert order is not None and order.status == OrderStatus.EXPIRED

    running = await ActivityEnvironment().run(
        SagaActivities(env.client).running_order_sagas, [recovered_id, forsaken_id]
    )
    # What the recovery still has to do is left to it; the other order has nobody.
    assert running == [recovered_id]
    await _stop(recovery)
    running = await ActivityEnvironment().run(
        SagaActivities(env.client).running_order_sagas, [recovered_id, forsaken_id]
    )
    assert running == []


async def _stop(*sagas: WorkflowHandle[Any, Any]) -> None:
    """Leave no saga of a finished test watching or waiting on the shared server."""
    for saga in sagas:
        if (await saga.describe()).status == WorkflowExecutionStatus.RUNNING:
            await saga.terminate("the test is over")


async def _status_is(handle: WorkflowHandle[Any, Any], status: OrderStatus) -> bool:
    return bool((await attributes(handle))["OrderStatus"] == status)


async def _flagged(handle: WorkflowHandle[Any, Any]) -> bool:
    return (await attributes(handle))["Flagged"] is True


async def _equal(found: Awaitable[list[str]], expected: list[str]) -> bool:
    return await found == expected


async def _contains(text: Awaitable[str], part: str) -> bool:
    return part in await text


def _now() -> datetime:
    return datetime.now(UTC)


async def test_the_reconciliation_schedule_follows_the_settings_and_keeps_a_pause(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, task_queue=f"schedule-{uuid.uuid4()}")
    await schedule_reconciliation(env.client, settings)
    schedule = env.client.get_schedule_handle(RECONCILE_WORKFLOW_ID)
    await schedule.pause(note="an operator looks into something")

    changed = settings.model_copy(update={"reconcile_every_seconds": 60})
    await schedule_reconciliation(env.client, changed)
    described = await schedule.describe()
    assert [i.every for i in described.schedule.spec.intervals] == [timedelta(seconds=60)]
    assert described.schedule.state.paused
    assert described.schedule.state.note == "an operator looks into something"
    await schedule.delete()
