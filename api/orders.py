"""Orders and reservations, for the business's app (API key required)."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.breakers import failing_gateway
from api.deps import AppState, ClientIdentity, State, authenticated_client
from api.problems import ApiProblem
from api.schemas import (
    ID_CHARS,
    PLAIN_ID,
    OrderCreate,
    PriceChanged,
    Problem,
    ReservationId,
)
from api.temporal import is_not_found, reaching_temporal, retrieve_start_failure
from api.timeline import Timeline, order_timeline
from core.contracts import OrderOutcome, OrderRequest, PaymentStart
from core.money import format_amount, to_cents
from core.public import OrderPublic, ReservationPublic
from core.temporal import failure_reason
from core.vocabulary import Gateway, OrderKind, OrderStatus, PaymentTiming, order_workflow_id
from store import orders
from store.db import transaction
from store.models import Order
from store.views import ShownOrder, opens_checkout, reservation_public, shown_order
from workflows import search_attributes
from workflows.order import OrderWorkflow


class _OrderCreationRoute(APIRoute):
    """`POST /v1/orders`, whose 503 promises that no order was made, nor ever will be. A
    database failure anywhere in the request (the client's signature, the Idempotency-Key's
    order, the verdict after the saga) cannot promise it: an earlier request with the same key,
    or this one's saga, may have made the order. It answers 504 instead of the database's usual
    "nothing was changed" 503, which would send the client to make a second one."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_outage(request: Request) -> Response:
            try:
                return await handle(request)
            except OperationalError as failure:
                raise ApiProblem(504, _unknown_whether_made(request)) from failure

        return handle_outage


def _unknown_whether_made(request: Request) -> str:
    unknown = "the database is unavailable, so whether the order was made is not known: "
    if request.headers.get("Idempotency-Key"):
        return unknown + "send the same request again, with the same Idempotency-Key"
    # Without a key the same request again makes another order: the reservation tells whether
    # this one was made.
    return unknown + (
        "look for it in GET /v1/reservations/{reservation_id} before making another "
        "(a request with an Idempotency-Key can simply be sent again)"
    )


router = APIRouter(prefix="/v1", tags=["orders"])
_creation = APIRouter(route_class=_OrderCreationRoute)

# 192 bits: a checkout page's token cannot be guessed, even knowing the order id.
CHECKOUT_TOKEN_BYTES = 24
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200)]
OrderId = Annotated[str, Path(min_length=1, max_length=ID_CHARS, pattern=PLAIN_ID)]
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "The body is not UTF-8 JSON"},
    401: {"model": Problem, "description": "Missing or wrong API key, or a bad signature"},
    404: {"model": Problem, "description": "Unknown order"},
    413: {"model": Problem, "description": "Body too large: refused unread"},
    422: {"model": Problem, "description": "Invalid request"},
    429: {"model": Problem, "description": "Over the key's request budget: see Retry-After"},
}


@_creation.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic,
    responses={
        **ERRORS,
        409: {
            "model": PriceChanged,
            "description": "The price is not the expected amount, or the order was cancelled",
        },
        422: {
            "model": Problem,
            "description": "Invalid request, a gateway not offered, or Idempotency-Key reused",
        },
        503: {"model": Problem, "description": "The gateway or Temporal is unavailable"},
        504: {
            "model": Problem,
            "description": "Whether the order was made is not known: send the same request "
            "again with the same Idempotency-Key, or, without one, look at the reservation",
        },
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
    per day. If `expected_amount` (what the client's page showed) differs, nothing is created
    and 409 gives the current amount. A new order supersedes the reservation's older pending
    ones. A 503 means that no order was made, nor ever will be; a 504, that the database fell
    away after the order's saga began, so that nobody can say yet: the same request again, with
    the same Idempotency-Key, answers the order or that none was made.
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
    if body.return_url is not None:
        _check_return_url(body.return_url, production=settings.mode == "production")
    fingerprint = _fingerprint(body, gateway)
    order_id = _order_id(client, idempotency_key)
    with state.engine.connect() as connection:
        # Only an Idempotency-Key names an order that may exist already.
        if idempotency_key is not None:
            existing = _shown(connection, order_id, state)
            if existing is not None:
                return _replay(existing, fingerprint)
        # What the claim will most likely decide: the saga's summary and its OrderKind are
        # written at its start, before the claim; the saga corrects OrderKind if it differs.
        kind = (
            OrderKind.RENEWAL
            if orders.is_reservation_active(
                connection, reservation_id=body.reservation_id, now=datetime.now(UTC)
            )
            else OrderKind.BOOKING
        )

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
        late_payment_horizon_seconds=settings.late_payment_horizon_seconds,
        deadline_extension_seconds=settings.deadline_extension_seconds,
        payment=body.payment,
        quote_ttl_seconds=settings.quote_ttl_seconds,
        checkout_token=secrets.token_urlsafe(CHECKOUT_TOKEN_BYTES),
        return_url=body.return_url,
        notify_url=settings.notify_url(gateway),
    )
    start = WithStartWorkflowOperation(
        OrderWorkflow.run,
        request,
        id=order_workflow_id(order_id),
        task_queue=settings.task_queue,
        # A retried POST with the same Idempotency-Key joins the order it already started.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=search_attributes.of_order(
            order_id,
            gateway=gateway,
            reservation_id=body.reservation_id,
            status=OrderStatus.PENDING,
            kind=kind,
        ),
        static_summary=(
            f"{kind} {body.days} days, {format_amount(amount_cents)} {settings.currency}, "
            f"{body.reservation_id}"
        ),
        static_details=f"order {order_id} through {gateway}",
    )
    # Refused by the breaker, or not made by the saga, the verdict below decides all the same:
    # a request with the same Idempotency-Key may be making the order at another API just now.
    problem = await failing_gateway(state.engine, gateway) or await _until_payable(state, start)
    if problem is not None:
        # Unless the saga answered with the QR code, one verdict shared with the saga says
        # whether the order was made: giving it up here means it never will be, however late
        # a worker takes the saga. So a 503 always means that nothing was made.
        with transaction(state.engine) as session:
            made = orders.abandon_creation(session, order_id=order_id, now=datetime.now(UTC))
        if not made:
            raise problem
    with state.engine.connect() as connection:
        made_order = _shown(connection, order_id, state)
    if made_order is None:
        raise problem or _not_created()
    return _replay(made_order, fingerprint)


router.include_router(_creation)


async def _until_payable(
    state: AppState, start: WithStartWorkflowOperation[OrderWorkflow, OrderOutcome]
) -> ApiProblem | None:
    """Start the order's saga (or join it) and wait for its QR code; why not, if it failed."""
    try:
        with reaching_temporal("no order was created"):
            await state.temporal.execute_update_with_start_workflow(
                OrderWorkflow.payment_instructions,
                start_workflow_operation=start,
                rpc_timeout=timedelta(seconds=state.settings.payment_create_timeout_seconds + 10),
            )
    except WorkflowAlreadyStartedError:
        return _not_created()  # its saga ended already: unless the verdict says made
    except WorkflowUpdateFailedError as failure:
        return ApiProblem(503, failure_reason(failure))
    except ApiProblem as problem:
        return problem
    finally:
        retrieve_start_failure(start)
    return None


@router.get("/orders/{order_id}", response_model=OrderPublic, responses=ERRORS)
def get_order(order_id: OrderId, state: State, _: ClientIdentity) -> OrderPublic:
    with state.engine.connect() as connection:
        return known_order_public(connection, order_id, state)


@router.get("/orders/{order_id}/timeline", response_model=Timeline, responses=ERRORS)
async def get_timeline(order_id: OrderId, state: State, _: ClientIdentity) -> Timeline:
    """The order's story, every step in time order: created, notifications and their outcomes,
    gateway calls and their results, supersession, refunds, flags and operators' actions.
    `gaps` names what could not be read (Temporal unreachable, histories past retention)."""
    timeline = await order_timeline(state.engine, state.temporal, order_id)
    if timeline is None:
        raise ApiProblem(404, f"no order {order_id!r}")
    return timeline


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderPublic,
    responses={**ERRORS, 409: {"model": Problem, "description": "The order is not pending"}},
)
async def cancel_order(order_id: OrderId, state: State, _: ClientIdentity) -> OrderPublic:
    """Cancel a pending order and close its trade. A payment that got there first wins."""
    with transaction(state.engine) as session:
        order = known_order(session, order_id)
        if order.status != OrderStatus.PENDING:
            raise ApiProblem(409, f"the order is {order.status}, not pending")
    handle = state.temporal.get_workflow_handle(order_workflow_id(order_id))
    try:
        with reaching_temporal("the order was not cancelled"):
            ended: OrderStatus = await handle.execute_update(OrderWorkflow.cancel)
        done: str | None = f"the order ended {ended}"
    except WorkflowUpdateFailedError as failure:
        raise ApiProblem(409, failure_reason(failure)) from failure
    except RPCError as failure:
        if not is_not_found(failure):
            raise
        # Its saga ended between our read and the update: the row says how.
        done = None
    with _shown_after(order_id, done), state.engine.connect() as connection:
        return known_order_public(connection, order_id, state)


@router.post(
    "/orders/{order_id}/payment",
    response_model=OrderPublic,
    responses={
        **ERRORS,
        401: {"model": Problem, "description": "Neither an API key nor the checkout token"},
        404: {"model": Problem, "description": "Unknown order, or not its checkout token"},
        409: {
            "model": PriceChanged,
            "description": "The order can no longer be paid as quoted: why, and today's price",
        },
        503: {"model": Problem, "description": "The gateway or Temporal is unavailable"},
    },
)
async def start_payment(
    order_id: OrderId,
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_checkout_token: Annotated[str | None, Header(max_length=200)] = None,
) -> OrderPublic:
    """The buyer pressed Pay: make a deferred order's trade and answer it with its QR code.

    The checkout page calls this with its token (`X-Checkout-Token`); the business's app may,
    with its API key. The trade is made only if, at this moment, the order is still its
    reservation's payable one, its kind still fits the reservation, its days cost what it was
    quoted and its quote has not lapsed: otherwise 409 says why and gives today's price, and
    no QR code exists for it. Pressing Pay again answers the same QR code. The payment
    deadline runs from now.
    """
    if x_checkout_token is None:
        await authenticated_client(request, state, authorization)
    with transaction(state.engine) as session:
        order = known_order(session, order_id)
        if x_checkout_token is not None and not opens_checkout(order, x_checkout_token):
            raise _unknown(order_id)
    settings = state.settings
    price = order.days * to_cents(settings.price_per_day)
    done: str | None = None
    if order.payment == PaymentTiming.DEFERRED:
        handle = state.temporal.get_workflow_handle(order_workflow_id(order_id))
        try:
            with reaching_temporal("no payment was made"):
                await handle.execute_update(
                    OrderWorkflow.start_payment,
                    PaymentStart(order_id=order_id, amount_cents=price),
                    rpc_timeout=timedelta(seconds=settings.payment_create_timeout_seconds + 10),
                )
            done = "the order's payment is made (pressing Pay again answers its QR code)"
        except WorkflowUpdateFailedError as failure:
            cause = failure.cause
            if isinstance(cause, ApplicationError) and cause.type == "PaymentNotCreated":
                raise ApiProblem(503, f"{failure_reason(failure)}; try again") from failure
            raise _not_payable(failure_reason(failure), price, settings.currency) from failure
        except RPCError as failure:
            if not is_not_found(failure):
                raise
            # Its saga has ended: the order with it, as its row says next.
    with _shown_after(order_id, done), state.engine.connect() as connection:
        shown = known_order_public(connection, order_id, state)
    if shown.status != OrderStatus.PENDING or shown.qr_code is None:
        reason = shown.status_reason or f"it is {shown.status}"
        raise _not_payable(f"this order can no longer be paid: {reason}", price, settings.currency)
    return shown


@contextmanager
def _shown_after(order_id: str, done: str | None) -> Iterator[None]:
    """Reading the order back once `done` (None: nothing was done): a database gone meanwhile
    must not be answered as the usual "nothing was changed", which would be untrue."""
    try:
        yield
    except OperationalError as failure:
        if done is None:
            raise
        raise ApiProblem(
            503,
            f"{done}, but the database is unavailable to show it: "
            f"GET /v1/orders/{order_id} again shortly",
        ) from failure


def _not_payable(reason: str, price_cents: int, currency: str) -> ApiProblem:
    return ApiProblem(409, reason, amount=format_amount(price_cents), currency=currency)


@router.get(
    "/reservations/{reservation_id}",
    response_model=ReservationPublic,
    responses={**ERRORS, 404: {"model": Problem, "description": "Unknown reservation"}},
)
def get_reservation(
    reservation_id: Annotated[ReservationId, Path()], state: State, _: ClientIdentity
) -> ReservationPublic:
    with transaction(state.engine) as session:
        reservation = orders.get_reservation(session, reservation_id)
        if reservation is None:
            raise ApiProblem(404, f"no reservation {reservation_id!r}")
        return reservation_public(session, reservation, datetime.now(UTC))


def known_order(session: Session, order_id: str) -> Order:
    order = orders.get_order(session, order_id)
    if order is None:
        raise _unknown(order_id)
    return order


def known_order_public(connection: Connection, order_id: str, state: AppState) -> OrderPublic:
    """The order as the API answers it; 404 if there is none."""
    shown = _shown(connection, order_id, state)
    if shown is None:
        raise _unknown(order_id)
    return shown.public


def _shown(connection: Connection, order_id: str, state: AppState) -> ShownOrder | None:
    return shown_order(connection, order_id, public_base_url=state.settings.public_base_url)


def _unknown(order_id: str) -> ApiProblem:
    return ApiProblem(404, f"no order {order_id!r}")


def _replay(shown: ShownOrder, fingerprint: str) -> OrderPublic:
    """What a POST whose order exists answers: that order, unless it cannot be paid."""
    order = shown.public
    if shown.request_fingerprint != fingerprint:
        raise ApiProblem(422, "this Idempotency-Key was used for a different request")
    if order.qr_code is None and order.payment == PaymentTiming.IMMEDIATE:
        # Made before the payment (an older saga) and then given up: as the first answer said.
        raise _not_created()
    if order.status == OrderStatus.CANCELLED:
        raise ApiProblem(
            409,
            f"order {order.order_id} was cancelled ({order.status_reason}); a new order needs "
            "a new Idempotency-Key",
        )
    return order


def _check_return_url(url: str, *, production: bool) -> None:
    schemes = ("https",) if production else ("https", "http")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ApiProblem(
            422,
            f"return_url must be an absolute {' or '.join(schemes)} URL, not {url!r}",
        )


def _fingerprint(body: OrderCreate, gateway: Gateway) -> str:
    request = {"reservation_id": body.reservation_id, "days": body.days, "gateway": gateway}
    # Orders from before these fields fingerprinted without them: their replays still match.
    if body.payment != PaymentTiming.IMMEDIATE:
        request["payment"] = body.payment
    if body.return_url is not None:
        request["return_url"] = body.return_url
    canonical = json.dumps(request)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _order_id(client: str, idempotency_key: str | None) -> str:
    # The same client and Idempotency-Key always name the same order, and so the same
    # workflow: Temporal itself then refuses to make a second one.
    if idempotency_key is None:
        return "ord_" + uuid.uuid4().hex[:24]
    digest = hashlib.sha256(f"{client}:{idempotency_key}".encode()).hexdigest()
    return "ord_" + digest[:24]


def _not_created() -> ApiProblem:
    return ApiProblem(503, "the order could not be created; retry with a new request")
