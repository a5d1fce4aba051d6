"""Orders and reservations, for the business's app (API key required)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header
from sqlmodel import Session
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.deps import ClientIdentity, State
from api.problems import ApiProblem
from api.schemas import OrderCreate, OrderPublic, PriceChanged, Problem, ReservationPublic
from api.temporal import is_not_found, reaching_temporal
from api.views import order_public, reservation_public
from core.contracts import OrderRequest
from core.money import format_amount, to_cents
from core.temporal import failure_reason
from core.vocabulary import Gateway, OrderStatus, order_workflow_id
from store import orders
from store.db import transaction
from store.models import Order
from workflows import search_attributes
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/v1", tags=["orders"])
IdempotencyKey = Annotated[str | None, Header(max_length=200)]
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "Missing or wrong API key"},
    404: {"model": Problem, "description": "Unknown order"},
}


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic,
    responses={
        **ERRORS,
        409: {"model": PriceChanged, "description": "The price is not the expected amount"},
        422: {
            "model": Problem,
            "description": "Invalid request, a gateway not offered, or Idempotency-Key reused",
        },
        503: {"model": Problem, "description": "The gateway or Temporal is unavailable"},
    },
)
async def create_order(
    body: OrderCreate,
    state: State,
    client: ClientIdentity,
    idempotency_key: IdempotencyKey = None,
) -> OrderPublic:
    """Create an order for a reservation; answers once its QR code exists.

    `gateway` picks the gateway the buyer pays through (default: the service's default); one
    that is not offered here is 422, naming those that are. The amount is days × the price
    per day. If `expected_amount` (what the client's page
    showed) differs, nothing is created and 409 gives the current amount. A new order
    supersedes the reservation's older pending ones.
    """
    settings = state.settings
    gateway = body.gateway or settings.default_gateway
    if gateway not in state.verifiers:
        offered = ", ".join(state.verifiers)
        raise ApiProblem(422, f"gateway {gateway} is not offered here; choose one of: {offered}")
    amount_cents = body.days * to_cents(settings.price_per_day)
    if body.expected_amount is not None and to_cents(body.expected_amount) != amount_cents:
        raise ApiProblem(
            409,
            f"the price changed: {body.days} days cost {format_amount(amount_cents)} "
            f"{settings.currency}, not {body.expected_amount}",
            amount=format_amount(amount_cents),
            currency=settings.currency,
        )
    fingerprint = _fingerprint(body, gateway)
    order_id = _order_id(client, idempotency_key)
    with transaction(state.engine) as session:
        existing = orders.get_order(session, order_id)
        if existing is not None:
            return _replay(session, existing, fingerprint)

    request = OrderRequest(
        order_id=order_id,
        reservation_id=body.reservation_id,
        days=body.days,
        amount_cents=amount_cents,
        currency=settings.currency,
        gateway=gateway,
        request_fingerprint=fingerprint,
        payment_timeout_seconds=settings.payment_timeout_seconds,
        payment_create_timeout_seconds=settings.payment_create_timeout_seconds,
    )
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        request,
        id=order_workflow_id(order_id),
        task_queue=settings.task_queue,
        # A retried POST with the same Idempotency-Key joins the order it already started.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.RESERVATION_ID, body.reservation_id),
                SearchAttributePair(search_attributes.ORDER_STATUS, OrderStatus.PENDING),
            ]
        ),
    )
    try:
        with reaching_temporal("no order was created"):
            await state.temporal.execute_update_with_start_workflow(
                OrderWorkflow.payment_instructions,
                start_workflow_operation=start,
                rpc_timeout=timedelta(seconds=settings.payment_create_timeout_seconds + 10),
            )
    except WorkflowAlreadyStartedError:
        pass  # the order ended already; its row says how
    except WorkflowUpdateFailedError as failure:
        raise ApiProblem(503, failure_reason(failure)) from failure
    with transaction(state.engine) as session:
        order = orders.get_order(session, order_id)
        if order is None:
            # Its saga gave up before making the order (no worker took it in time).
            raise ApiProblem(503, "the order could not be created; retry with a new request")
        return _replay(session, order, fingerprint)


@router.get("/orders/{order_id}", response_model=OrderPublic, responses=ERRORS)
def get_order(order_id: str, state: State, _: ClientIdentity) -> OrderPublic:
    with transaction(state.engine) as session:
        return order_public(session, _known_order(session, order_id))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderPublic,
    responses={**ERRORS, 409: {"model": Problem, "description": "The order is not pending"}},
)
async def cancel_order(order_id: str, state: State, _: ClientIdentity) -> OrderPublic:
    """Cancel a pending order and close its trade. A payment that got there first wins."""
    with transaction(state.engine) as session:
        order = _known_order(session, order_id)
        if order.status != OrderStatus.PENDING:
            raise ApiProblem(409, f"the order is {order.status}, not pending")
    handle = state.temporal.get_workflow_handle(order_workflow_id(order_id))
    try:
        with reaching_temporal("the order was not cancelled"):
            await handle.execute_update(OrderWorkflow.cancel)
    except WorkflowUpdateFailedError as failure:
        raise ApiProblem(409, failure_reason(failure)) from failure
    except RPCError as failure:
        if not is_not_found(failure):
            raise
        # Its saga ended between our read and the update: the row says how.
    with transaction(state.engine) as session:
        return order_public(session, _known_order(session, order_id))


@router.get(
    "/reservations/{reservation_id}",
    response_model=ReservationPublic,
    responses={401: ERRORS[401], 404: {"model": Problem, "description": "Unknown reservation"}},
)
def get_reservation(reservation_id: str, state: State, _: ClientIdentity) -> ReservationPublic:
    with transaction(state.engine) as session:
        reservation = orders.get_reservation(session, reservation_id)
        if reservation is None:
            raise ApiProblem(404, f"no reservation {reservation_id!r}")
        return reservation_public(session, reservation, datetime.now(UTC))


def _known_order(session: Session, order_id: str) -> Order:
    order = orders.get_order(session, order_id)
    if order is None:
        raise ApiProblem(404, f"no order {order_id!r}")
    return order


def _replay(session: Session, order: Order, fingerprint: str) -> OrderPublic:
    if order.request_fingerprint != fingerprint:
        raise ApiProblem(422, "this Idempotency-Key was used for a different request")
    return order_public(session, order)


def _fingerprint(body: OrderCreate, gateway: Gateway) -> str:
    canonical = json.dumps(
        {"reservation_id": body.reservation_id, "days": body.days, "gateway": gateway}
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _order_id(client: str, idempotency_key: str | None) -> str:
    # The same client and Idempotency-Key always name the same order, and so the same
    # workflow: Temporal itself then refuses to make a second one.
    if idempotency_key is None:
        return "ord_" + uuid.uuid4().hex[:24]
    digest = hashlib.sha256(f"{client}:{idempotency_key}".encode()).hexdigest()
    return "ord_" + digest[:24]
