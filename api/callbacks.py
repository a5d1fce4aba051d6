"""The gateways' asynchronous notifications: `POST /v1/callbacks/{gateway}`, each gateway's
`notify_url`.

A notification is believed only once the gateway's adapter has verified it; it is written to
the database before anything is acknowledged, then handed to the order's saga (or, when that
saga has ended, to a late-payment saga). Only then does the gateway get its acknowledgement;
on any failure it gets an error and sends the notification again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import AppState, State
from api.problems import ApiProblem
from api.schemas import Problem
from api.temporal import is_not_found, reaching_temporal
from core.contracts import PaymentNotice
from core.money import format_amount
from core.vocabulary import Gateway, late_payment_workflow_id, order_workflow_id
from gateways.errors import NotificationRejected
from gateways.gateway import (
    FRESHNESS_WINDOW,
    CallbackReply,
    CallbackRequest,
    EventKind,
    NotificationVerifier,
    NotifiedEvent,
)
from store import callbacks, nonces, orders
from store.db import transaction
from store.models import PaymentStatus
from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
# No notification of any gateway comes near this; a larger body is refused unread.
MAX_BODY_BYTES = 65536


class Refused(Exception):
    """A notification that must not be acted on: answered `status_code`, recorded as such."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


@router.post(
    "/{gateway}",
    responses={
        200: {"description": "Recorded and handed on (Alipay: the text `success`)"},
        204: {"description": "Recorded and handed on (WeChat Pay)"},
        400: {"model": Problem, "description": "Malformed, replayed or not signed by the gateway"},
        404: {"model": Problem, "description": "Unknown gateway or order"},
        503: {"model": Problem, "description": "Not recorded or not handed on: send again"},
    },
)
async def notification(gateway: str, request: Request, state: State) -> Response:
    """Answers in the gateway's own words once the notification is durably recorded."""
    door, verifier = _door(state, gateway)
    body = await request.body()
    try:
        handover = _take(state, door, verifier, CallbackRequest(dict(request.headers), body))
        if handover is not None:
            await _hand_over(state, handover)
    except Refused as refusal:
        message = f"notification rejected: {refusal.reason}"
        return _reply(verifier.refusal(refusal.status_code, message))
    except ApiProblem as problem:
        return _reply(verifier.refusal(problem.status_code, problem.detail))
    except OperationalError:
        # Nothing was committed: the gateway must send it again.
        message = "the database is unavailable; nothing was recorded, send again"
        return _reply(verifier.refusal(503, message))
    return _reply(verifier.acknowledgement())


def _take(
    state: AppState, door: Gateway, verifier: NotificationVerifier, request: CallbackRequest
) -> PaymentNotice | None:
    """Verify and record a callback; the payment to hand on, if any. Raises Refused, after
    recording why."""
    now = datetime.now(UTC)
    try:
        if len(request.body) > MAX_BODY_BYTES:
            raise NotificationRejected("body too large")
        event = verifier.verify(request, now=now)
    except NotificationRejected as rejection:
        _record_refusal(state, door, request.body, rejection.reason, now)
        raise Refused(400, rejection.reason) from rejection
    try:
        with transaction(state.engine) as session:
            return _record_notification(session, request.body, event, now)
    except Refused as refusal:
        _record_refusal(state, event, request.body, refusal.reason, now)
        raise


def _door(state: AppState, gateway: str) -> tuple[Gateway, NotificationVerifier]:
    for name, verifier in state.verifiers.items():
        if name == gateway:
            return name, verifier
    offered = ", ".join(state.verifiers)
    raise ApiProblem(404, f"no gateway {gateway!r} here; callbacks are taken for {offered}")


def _record_notification(
    session: Session, body: bytes, event: NotifiedEvent, now: datetime
) -> PaymentNotice | None:
    """Record a verified notification; the payment to hand on, if any. Raises Refused."""
    if event.nonce is not None and not nonces.first_sighting(
        session, scope=event.gateway, nonce=event.nonce, now=now, window=FRESHNESS_WINDOW
    ):
        raise Refused(400, f"nonce {event.nonce!r} was seen before: a replay")
    order = orders.get_order(session, event.out_trade_no)
    if order is None:
        raise Refused(404, f"no order {event.out_trade_no!r}")
    if order.gateway != event.gateway:
        raise Refused(404, f"order {order.id!r} is not paid through {event.gateway}")
    if event.kind is not EventKind.PAYMENT or event.trade_no is None:
        # A refund's notice or a trade that is not paid (yet) moves no money in: recorded
        # for the audit trail, nothing more.
        _record(session, event, body, outcome=event.kind, now=now)
        return None
    if event.amount_cents != order.amount_cents:
        paid = "no amount" if event.amount_cents is None else format_amount(event.amount_cents)
        reason = f"paid {paid} for an order of {format_amount(order.amount_cents)}"
        # Never taken as paid; recorded and flagged for an operator. The gateway sending it
        # again would change nothing, so it is acknowledged.
        orders.flag_order(session, order_id=order.id, reason=reason, now=now)
        _record(session, event, body, outcome="flagged", reason=reason, now=now)
        return None
    notice = PaymentNotice(
        gateway=Gateway(event.gateway),
        order_id=event.out_trade_no,
        trade_no=event.trade_no,
        amount_cents=event.amount_cents,
        paid_at=event.paid_at,
    )
    payment = orders.record_payment(session, notice=notice, now=now)
    _record(session, event, body, outcome="payment", now=now)
    # A payment already decided (a repeat of its notification) needs no second hand-over.
    return notice if payment.status == PaymentStatus.RECEIVED else None


async def _hand_over(state: AppState, notice: PaymentNotice) -> None:
    """Give the payment to its order's saga, or to a late-payment saga if that has ended."""
    with reaching_temporal("recorded but not handed on, send again"):
        handle = state.temporal.get_workflow_handle(order_workflow_id(notice.order_id))
        try:
            await handle.signal(OrderWorkflow.payment_notified, notice)
        except RPCError as failure:
            if not is_not_found(failure):
                raise
            await state.temporal.start_workflow(
                LatePaymentWorkflow.run,
                notice,
                id=late_payment_workflow_id(notice.gateway, notice.trade_no),
                task_queue=state.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )


def _record_refusal(
    state: AppState, about: Gateway | NotifiedEvent, body: bytes, reason: str, now: datetime
) -> None:
    # An unverified body is believed in nothing: it is kept only as it came.
    with transaction(state.engine) as session:
        if isinstance(about, NotifiedEvent):
            _record(session, about, body, outcome="rejected", reason=reason, now=now)
        else:
            callbacks.record_attempt(
                session, gateway=about, body=body, outcome="rejected", reason=reason, now=now
            )


def _record(
    session: Session,
    event: NotifiedEvent,
    body: bytes,
    *,
    outcome: str,
    now: datetime,
    reason: str | None = None,
) -> None:
    callbacks.record_attempt(
        session,
        gateway=event.gateway,
        body=body,
        outcome=outcome,
        now=now,
        reason=reason,
        event_id=event.event_id,
        out_trade_no=event.out_trade_no,
        trade_no=event.trade_no,
        trade_status=event.trade_status,
    )


def _reply(reply: CallbackReply) -> Response:
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)
