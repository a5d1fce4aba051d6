"""An order's story: every step in time order, built from what paysaga already records — the
order's rows in the database (notifications, payments, refunds, operators' actions) and the
histories Temporal keeps of the workflows that concerned it (gateway calls and their results,
decisions, supersession). Nothing is written twice to tell it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.contracts import Settlement, TradeCheck
from core.money import format_amount
from core.vocabulary import (
    Gateway,
    OrderStatus,
    late_payment_workflow_id,
    order_workflow_id,
    recovery_workflow_id,
)
from store import callbacks, orders
from store.db import transaction
from store.models import CallbackAttempt, Order, RefundStatus

Source = Literal["order", "notification", "saga", "gateway", "refund", "operator"]
# The SDK's record, in a saga's history, of a local activity it ran.
LOCAL_ACTIVITY_MARKER = "core_local_activity"
# What each step of a saga did, said once it is known.
GATEWAY_STEPS = {"create_payment", "check_trade", "close_trade", "refund_payment", "confirm_refund"}


class TimelineEntry(BaseModel):
    at: datetime
    source: Source
    event: str
    detail: str | None = None


class Timeline(BaseModel):
    order_id: str
    status: OrderStatus
    entries: list[TimelineEntry]
    # Steps that could not be read (Temporal unreachable, histories past their retention).
    gaps: list[str]


async def order_timeline(engine: Engine, temporal: Client, order_id: str) -> Timeline | None:
    """The order's story, or None if there is no such order."""
    with transaction(engine) as session:
        order = orders.get_order(session, order_id)
        if order is None:
            return None
        entries = _recorded(order)
        entries += _notifications(callbacks.attempts_about(session, order_id))
        payments = orders.payments_of(session, order_id)
        for refund in orders.refunds_of(session, order_id):
            trade = orders.trade_of_refund(session, refund)
            entries.append(
                TimelineEntry(
                    at=refund.created_at,
                    source="refund",
                    event=f"refund {refund.refund_no} decided for trade {trade}",
                    detail=f"{format_amount(refund.amount_cents)}: {refund.reason}",
                )
            )
            if refund.completed_at is not None:
                done = "confirmed" if refund.status == RefundStatus.SUCCEEDED else "refused"
                entries.append(
                    TimelineEntry(
                        at=refund.completed_at,
                        source="refund",
                        event=f"refund {refund.refund_no} {done}",
                        detail=None if done == "confirmed" else refund.reason,
                    )
                )
        for action in orders.actions_on(session, order_id):
            until = f" to {action.until:%Y-%m-%d %H:%M} UTC" if action.until else ""
            entries.append(
                TimelineEntry(
                    at=action.at,
                    source="operator",
                    event=f"operator: {action.action.replace('_', ' ')}{until}",
                    detail=action.note,
                )
            )
        workflow_ids = [order_workflow_id(order_id), recovery_workflow_id(order_id)]
        workflow_ids += [
            late_payment_workflow_id(Gateway(payment.gateway), payment.trade_no)
            for payment in payments
        ]
        status = OrderStatus(order.status)
    gaps: list[str] = []
    for workflow_id in workflow_ids:
        try:
            entries += await _saga_steps(temporal, workflow_id)
        except RPCError as failure:
            if failure.status != RPCStatusCode.NOT_FOUND:
                gaps.append(f"{workflow_id}: Temporal did not answer ({failure.message})")
            elif workflow_id == workflow_ids[0]:
                gaps.append(f"{workflow_id}: no history (past the namespace's retention?)")
        except RuntimeError as failure:  # the lazy client could not connect at all
            gaps.append(f"{workflow_id}: Temporal is unreachable ({failure})")
    entries.sort(key=lambda entry: entry.at)
    return Timeline(order_id=order_id, status=status, entries=entries, gaps=gaps)


def _recorded(order: Order) -> list[TimelineEntry]:
    entries = [
        TimelineEntry(
            at=order.created_at,
            source="order",
            event="created" + (", its QR code issued" if order.qr_code else ""),
            detail=(
                f"{order.kind} of {order.days} days for {order.reservation_id}, "
                f"{format_amount(order.amount_cents)} {order.currency} through {order.gateway}, "
                f"payable until {order.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            ),
        )
    ]
    if order.superseded_by is not None:
        entries.append(
            TimelineEntry(
                at=order.updated_at,
                source="order",
                event=f"superseded by {order.superseded_by}",
            )
        )
    if order.flag_reason is not None:
        entries.append(
            TimelineEntry(
                at=order.updated_at, source="order", event="flagged", detail=order.flag_reason
            )
        )
    return entries


def _notifications(attempts: Sequence[CallbackAttempt]) -> list[TimelineEntry]:
    """Each notification with its outcome; repeats of a payment's are counted, not listed."""
    entries: list[TimelineEntry] = []
    first_of_trade: dict[str, TimelineEntry] = {}
    repeats: dict[str, int] = {}
    for attempt in attempts:
        trade = attempt.trade_no or "?"
        if attempt.outcome == "payment" and trade in first_of_trade:
            repeats[trade] = repeats.get(trade, 0) + 1
            last = f"{attempt.received_at:%H:%M:%S} UTC"
            first_of_trade[trade].detail = f"accepted; duplicate ×{repeats[trade]}, last at {last}"
            continue
        entry = TimelineEntry(
            at=attempt.received_at,
            source="notification",
            event=f"{attempt.gateway} notified {attempt.trade_status or attempt.outcome}"
            + (f" of trade {attempt.trade_no}" if attempt.trade_no else ""),
            detail="accepted"
            if attempt.outcome == "payment"
            else attempt.reason or attempt.outcome,
        )
        if attempt.outcome == "payment":
            first_of_trade[trade] = entry
        entries.append(entry)
    return entries


async def _saga_steps(temporal: Client, workflow_id: str) -> list[TimelineEntry]:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    converter = temporal.data_converter
    scheduled: dict[int, tuple[str, str]] = {}
    attempts: dict[int, int] = {}
    entries: list[TimelineEntry] = []
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            name = event.workflow_execution_started_event_attributes.workflow_type.name
            entries.append(TimelineEntry(at=at, source="saga", event=f"{name} {workflow_id} began"))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, await _summary(temporal, event) or name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            attempts[started.scheduled_event_id] = started.attempt
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            name, summary = scheduled[completed.scheduled_event_id]
            tries = attempts.get(completed.scheduled_event_id, 1)
            step = _Step(at, name, summary, tries)
            entries += await step.done(temporal, list(completed.result.payloads))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            name, summary = scheduled[failed.scheduled_event_id]
            tries = attempts.get(failed.scheduled_event_id, 1)
            entries.append(await _Step(at, name, summary, tries).failed(temporal, failed.failure))
        elif event.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
            # A step run within the saga's workflow task: its marker holds the SDK's note of it
            # (type, attempt, when it began), its result or its failure. The marker is written
            # only with the task, after whatever the step did, so the step is told when it began
            # (the note's completion time, as temporalio 1.35 writes it, comes before that).
            marker = event.marker_recorded_event_attributes
            [note] = await converter.decode(list(marker.details["data"].payloads), [dict])
            name, began = str(note["activity_type"]), note.get("original_schedule_time")
            if began:
                at = datetime.fromtimestamp(began["seconds"], UTC)
                at += timedelta(microseconds=began["nanos"] // 1000)
            step = _Step(at, name, await _summary(temporal, event) or name, int(note["attempt"]))
            if marker.HasField("failure"):
                entries.append(await step.failed(temporal, marker.failure))
            else:
                entries += await step.done(temporal, list(marker.details["result"].payloads))
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes.signal_name
            told = {"supersede": "told it was superseded", "payment_notified": "handed a payment"}
            if signal in told:
                entries.append(TimelineEntry(at=at, source="saga", event=told[signal]))
        elif event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            how = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_WORKFLOW_EXECUTION_")
            entries.append(
                TimelineEntry(at=at, source="saga", event=f"{workflow_id} {how.lower()}")
            )
    return entries


@dataclass(frozen=True)
class _Step:
    """A step a saga ran (an activity, remote or local), as the story tells it."""

    at: datetime
    name: str
    summary: str
    tries: int

    @property
    def source(self) -> Source:
        return "gateway" if self.name in GATEWAY_STEPS else "saga"

    async def done(self, temporal: Client, result: list[Payload]) -> list[TimelineEntry]:
        """What it came to, if worth a line."""
        detail = await _result(temporal, self.name, result)
        if detail is None:
            return []
        if self.tries > 1:
            detail += f" (after {self.tries} attempts)"
        return [TimelineEntry(at=self.at, source=self.source, event=self.summary, detail=detail)]

    async def failed(self, temporal: Client, failure: Failure) -> TimelineEntry:
        error = await temporal.data_converter.decode_failure(failure)
        return TimelineEntry(
            at=self.at,
            source=self.source,
            event=self.summary,
            detail=f"failed after {self.tries} attempts: {error}",
        )


async def _summary(temporal: Client, event: HistoryEvent) -> str | None:
    if not event.user_metadata.HasField("summary"):
        return None  # scheduled by a saga from before steps had summaries
    [summary] = await temporal.data_converter.decode([event.user_metadata.summary], [str])
    return str(summary)


async def _result(temporal: Client, step: str, payloads: list[Payload]) -> str | None:
    """What a completed step came to, in words; None for steps not worth a line."""
    decode = temporal.data_converter.decode
    if step in ("check_trade", "close_trade"):
        [check] = await decode(payloads, [TradeCheck])
        assert isinstance(check, TradeCheck)
        if check.payment is None:
            return "not paid" if step == "check_trade" else "closed unpaid"
        return f"paid: trade {check.payment.trade_no}, {format_amount(check.payment.amount_cents)}"
    if step == "settle_payment":
        [settlement] = await decode(payloads, [Settlement])
        assert isinstance(settlement, Settlement)
        if settlement.refund is not None:
            return f"to be refunded: {settlement.refund.reason or 'the order may not be paid'}"
        return f"order {settlement.order_status}"
    words = {
        "create_payment": "QR code issued",
        "refund_payment": "refund accepted by the gateway",
        "confirm_refund": "refund confirmed by the gateway",
        "end_order": "order ended",
        "claim_reservation": "reservation claimed",
    }
    return words.get(step)
