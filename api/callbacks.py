"""Alipay's asynchronous notifications (`notify_url`).

A notification is believed only once its RSA2 signature verifies; it is written to the
database before anything is acknowledged, then handed to the order's saga (or, when that
saga has ended, to a late-payment saga). Only then does Alipay get its `success`; on any
failure it gets an error and sends the notification again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlmodel import Session
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import AppState, State
from api.problems import ApiProblem
from api.schemas import Problem
from api.temporal import is_not_found, reaching_temporal
from gateways.alipay_notification import AlipayNotification, verify_notification
from gateways.errors import NotificationRejected
from paysaga.money import format_amount, to_cents
from store import orders
from store.db import transaction
from store.models import CallbackAttempt, PaymentStatus
from workflows.contracts import (
    GATEWAY_ALIPAY,
    PaymentNotice,
    late_payment_workflow_id,
    order_workflow_id,
)
from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
MAX_BODY_BYTES = 16384


@router.post(
    "/alipay",
    response_class=PlainTextResponse,
    responses={
        400: {"model": Problem, "description": "Malformed or not signed by Alipay"},
        404: {"model": Problem, "description": "Unknown order"},
        503: {"model": Problem, "description": "Not recorded or not handed on: send again"},
    },
)
async def alipay_notification(request: Request, state: State) -> PlainTextResponse:
    """Answers the plain text `success` once the notification is durably recorded."""
    body = await request.body()
    try:
        params = _form(body)
        notification = verify_notification(
            params,
            alipay_public_key=state.alipay_public_key,
            app_id=state.alipay_app_id,
            seller_id=state.alipay_seller_id,
        )
    except NotificationRejected as rejection:
        _record_refusal(state, body, str(rejection))
        raise ApiProblem(400, f"notification rejected: {rejection}") from rejection

    with transaction(state.engine) as session:
        unknown_order, handover = _record_notification(session, body, notification)
    if unknown_order is not None:
        raise ApiProblem(404, f"notification rejected: {unknown_order}")
    if handover is not None:
        await _hand_over(state, handover)
    return _acknowledged()


def _record_notification(
    session: Session, body: bytes, notification: AlipayNotification
) -> tuple[str | None, PaymentNotice | None]:
    """Record a verified notification; say why it is refused, or which payment to hand on."""
    order = orders.get_order(session, notification.out_trade_no)
    if order is None:
        reason = f"no order {notification.out_trade_no!r}"
        session.add(_attempt(body, notification, outcome="rejected", reason=reason))
        return reason, None
    if notification.is_refund or not notification.is_payment:
        # A refund's notice (Alipay sends those to the same URL) or a trade that is not
        # paid (yet) moves no money in: recorded for the audit trail, nothing more.
        outcome = "refund" if notification.is_refund else "ignored"
        session.add(_attempt(body, notification, outcome=outcome))
        return None, None
    if to_cents(notification.total_amount) != order.amount_cents:
        reason = (
            f"paid {notification.total_amount} for an order of {format_amount(order.amount_cents)}"
        )
        # Never taken as paid; recorded and flagged for an operator. Alipay sending it
        # again would change nothing, so it is acknowledged.
        orders.flag_order(session, order_id=order.id, reason=reason, now=_now())
        session.add(_attempt(body, notification, outcome="flagged", reason=reason))
        return None, None
    notice = _notice(notification)
    payment = orders.record_payment(session, notice=notice, now=_now())
    session.add(_attempt(body, notification, outcome="payment"))
    # A payment already decided (a repeat of its notification) needs no second hand-over.
    return None, notice if payment.status == PaymentStatus.RECEIVED else None


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
                id=late_payment_workflow_id(notice.trade_no),
                task_queue=state.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )


def _acknowledged() -> PlainTextResponse:
    # Alipay stops resending on exactly these seven characters.
    return PlainTextResponse("success")


def _form(body: bytes) -> dict[str, str]:
    if len(body) > MAX_BODY_BYTES:
        raise NotificationRejected("body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as malformed:
        raise NotificationRejected("body is not a utf-8 form") from malformed
    params = dict(pairs)
    if len(params) != len(pairs):
        raise NotificationRejected("a field is repeated")
    return params


def _notice(notification: AlipayNotification) -> PaymentNotice:
    return PaymentNotice(
        order_id=notification.out_trade_no,
        trade_no=notification.trade_no,
        amount_cents=to_cents(notification.total_amount),
        paid_at=notification.gmt_payment,
    )


def _record_refusal(state: AppState, body: bytes, reason: str) -> None:
    # Unverified, so nothing in the body is believed: it is kept only as it came.
    with transaction(state.engine) as session:
        session.add(_attempt(body, None, outcome="rejected", reason=reason))


def _attempt(
    body: bytes,
    notification: AlipayNotification | None,
    *,
    outcome: str,
    reason: str | None = None,
) -> CallbackAttempt:
    attempt = CallbackAttempt(
        gateway=GATEWAY_ALIPAY,
        outcome=outcome,
        reason=reason,
        body=_text(body),
        received_at=_now(),
    )
    if notification is not None:
        attempt.notify_id = notification.notify_id
        attempt.out_trade_no = notification.out_trade_no
        attempt.trade_no = notification.trade_no
        attempt.trade_status = notification.trade_status
    return attempt


def _text(body: bytes) -> str:
    return body[:MAX_BODY_BYTES].decode("utf-8", errors="replace")


def _now() -> datetime:
    return datetime.now(UTC)
