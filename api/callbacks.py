"""The gateways' asynchronous notifications: `POST /v1/callbacks/{gateway}`, each gateway's
`notify_url`.

The one door the internet may knock on without an API key, so it checks the cheap things
first: where the request came from (a gateway's own networks, when configured), then the
body's size (refused unread past MAX_BODY_BYTES), and only then the gateway's signature. A
notification is believed only once the gateway's adapter has verified it; it is written to
the database before anything is acknowledged, then handed to the order's saga (or, when that
saga has ended, to a late-payment saga), once: a repeat of a payment handed over is not. Only
then does the gateway get its acknowledgement; on any failure it gets an error and sends the
notification again.

A refused callback — unverified, or verified but not ours to take (an unknown order, a
replay) — is counted under its reason in a bounded tally, never kept as a row of its own:
refusals cannot fill the disk. Verified ones taken, ignored or flagged stay in the audit trail.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import AppState, State
from api.limits import BodyTooLarge
from api.metrics import app_metrics
from api.problems import ApiProblem
from api.schemas import is_plain_id
from api.temporal import is_not_found, reaching_temporal
from core.contracts import PaymentNotice
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
from workflows import search_attributes
from workflows.late_payment import LatePaymentWorkflow, late_payment_summary
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])
logger = logging.getLogger(__name__)
# No notification of any gateway comes near this; a larger body is refused unread.
MAX_BODY_BYTES = 65536
# What a caller chose (a quoted value, a number of two digits or more) is left out of the
# reason a refusal is tallied under: a forger varying it would otherwise cost a row each time.
_CALLERS_VALUE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|(?<![\w.-])\d{2,}(?![\w.-])""")


class Refused(Exception):
    """A callback that must not be acted on: answered `status_code`, tallied by its reason."""

    def __init__(self, status_code: int, reason: str, body: bytes = b"") -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.body = body


def _refusal(description: str) -> dict[str, object]:
    # Refusals come in the gateway's own words (Alipay's {"detail"}, WeChat Pay's {"code",
    # "message"}): a JSON object, whatever its shape.
    return {
        "description": f"{description}; in the gateway's own error format",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


@router.post(
    "/{gateway}",
    responses={
        200: {"description": "Recorded and handed on (Alipay: the text `success`)"},
        204: {"description": "Recorded and handed on (WeChat Pay)"},
        400: _refusal("Malformed, replayed or not signed by the gateway"),
        403: _refusal("Not from where this gateway's callbacks come"),
        404: _refusal("Unknown gateway or order"),
        413: _refusal("Body too large: refused unread"),
        503: _refusal("Not recorded or not handed on: send again"),
    },
)
async def notification(gateway: str, request: Request, state: State) -> Response:
    """Answers in the gateway's own words once the notification is durably recorded."""
    door, verifier = _door(state, gateway)
    now = datetime.now(UTC)
    try:
        try:
            outcome, handover = await _take(state, door, verifier, request, now)
        except Refused as refusal:
            _record_refusal(state, door, refusal, now)
            message = f"notification rejected: {refusal.reason}"
            reply = verifier.refusal(refusal.status_code, message)
            return _reply(reply, request=request, gateway=door, outcome="refused")
        if handover is not None:
            await _hand_over(state, handover)
    except ApiProblem as problem:
        reply = verifier.refusal(problem.status_code, problem.detail)
        return _reply(reply, request=request, gateway=door, outcome="failed")
    except OperationalError:
        # Nothing was committed: the gateway must send it again.
        message = "the database is unavailable; nothing was recorded, send again"
        reply = verifier.refusal(503, message)
        return _reply(reply, request=request, gateway=door, outcome="failed")
    return _reply(verifier.acknowledgement(), request=request, gateway=door, outcome=outcome)


async def _take(
    state: AppState, door: Gateway, verifier: NotificationVerifier, request: Request, now: datetime
) -> tuple[str, Handover | None]:
    """Check where a callback comes from, then read, verify and record it; what became of it,
    and the payment to hand on, if any. Raises Refused."""
    peer = request.client.host if request.client is not None else None
    wrong_source = state.callback_sources.refusal(
        door, peer, request.headers.getlist("x-forwarded-for")
    )
    if wrong_source is not None:
        raise Refused(403, wrong_source)
    try:
        body = await request.body()
    except BodyTooLarge as too_large:
        raise Refused(413, f"the body is over {MAX_BODY_BYTES} bytes") from too_large
    try:
        event = verifier.verify(CallbackRequest(dict(request.headers), body), now=now)
    except NotificationRejected as rejection:
        raise Refused(400, rejection.reason, body) from rejection
    with transaction(state.engine) as session:
        return _record_notification(session, body, event, now)


def _door(state: AppState, gateway: str) -> tuple[Gateway, NotificationVerifier]:
    for name, verifier in state.verifiers.items():
        if name == gateway:
            return name, verifier
    offered = ", ".join(state.verifiers)
    # The name comes from anyone's URL: enough of it is said back to recognise it, no more.
    raise ApiProblem(404, f"no gateway {gateway[:32]!r} here; callbacks are taken for {offered}")


@dataclass(frozen=True)
class Handover:
    """A recorded payment to hand to a saga, and its order's columns the UI shows."""

    notice: PaymentNotice
    payee: orders.Payee


def _record_notification(
    session: Session, body: bytes, event: NotifiedEvent, now: datetime
) -> tuple[str, Handover | None]:
    """Record a verified notification; what became of it, and the payment to hand on, if any.
    Raises Refused."""
    if event.nonce is not None and not nonces.first_sighting(
        session, scope=event.gateway, nonce=event.nonce, now=now, window=FRESHNESS_WINDOW
    ):
        raise Refused(400, f"nonce {event.nonce!r} was seen before: a replay", body)
    # Anything but a plain id is no trade of ours, and must not reach the database.
    payee = (
        orders.get_payee(session, event.out_trade_no) if is_plain_id(event.out_trade_no) else None
    )
    if payee is None:
        raise Refused(404, f"no order {event.out_trade_no!r}", body)
    if event.trade_no is not None and not is_plain_id(event.trade_no):
        raise Refused(400, f"trade number {event.trade_no!r} is not one a gateway gives", body)
    if payee.gateway != event.gateway:
        raise Refused(
            404, f"order {event.out_trade_no!r} is not paid through {event.gateway}", body
        )
    if event.kind is not EventKind.PAYMENT or event.trade_no is None:
        # A refund's notice or a trade that is not paid (yet) moves no money in: recorded
        # for the audit trail, nothing more.
        _record(session, event, body, outcome=event.kind, now=now)
        return event.kind, None
    if event.amount_cents is None:
        # A payment the gateway states no amount for cannot be settled; asking again is how
        # the saga will learn it.
        reason = "a payment without an amount"
        orders.flag_order(session, order_id=event.out_trade_no, reason=reason, now=now)
        _record(session, event, body, outcome="flagged", reason=reason, now=now)
        return "flagged", None
    # A payment of another amount is recorded and handed on like any other: settling it
    # refunds it (the money was captured) and flags its order.
    notice = PaymentNotice(
        gateway=Gateway(event.gateway),
        order_id=event.out_trade_no,
        trade_no=event.trade_no,
        amount_cents=event.amount_cents,
        paid_at=event.paid_at,
    )
    undecided = orders.record_payment(session, notice=notice, now=now)
    _record(session, event, body, outcome="payment", now=now)
    # A payment already decided (a repeat of its notification) needs no second hand-over.
    if not undecided:
        return "duplicate", None
    return "payment", Handover(notice, payee)


async def _hand_over(state: AppState, handover: Handover) -> None:
    """Give the payment to its order's saga, or to a late-payment saga if that has ended."""
    notice = handover.notice
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
                search_attributes=search_attributes.of_order(
                    notice.order_id,
                    gateway=notice.gateway,
                    reservation_id=handover.payee.reservation_id,
                    kind=handover.payee.kind,
                ),
                static_summary=late_payment_summary(notice),
            )
    _mark_handed_over(state, notice)


def _mark_handed_over(state: AppState, notice: PaymentNotice) -> None:
    # The mark only spares repeats of the notification a second hand-over: when the database
    # has just gone away the payment is recorded and handed over all the same, and is
    # acknowledged; a repeat is then handed over again, which the saga takes as a repeat.
    try:
        # A plain statement, without a session: it changes no order, so it has no events.
        with state.engine.begin() as connection:
            orders.mark_handed_over(connection, notice=notice, now=datetime.now(UTC))
    except OperationalError as failure:
        logger.warning(
            "callbacks: payment %s handed over, not marked so: %s",
            notice.trade_no,
            type(failure).__name__,
        )


def _record_refusal(state: AppState, door: Gateway, refusal: Refused, now: datetime) -> None:
    # Anyone can knock: a refusal is tallied under its reason, never kept as a row of its own.
    with transaction(state.engine) as session:
        callbacks.record_refusal(
            session,
            gateway=door,
            reason=_CALLERS_VALUE.sub("…", refusal.reason),
            body=refusal.body,
            now=now,
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


def _reply(reply: CallbackReply, *, request: Request, gateway: Gateway, outcome: str) -> Response:
    app_metrics(request).count_callback(gateway=gateway, outcome=outcome, code=reply.status_code)
    return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)
