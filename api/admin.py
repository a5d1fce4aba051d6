"""Operators' doors (`PAYSAGA_ADMIN_KEYS`): act on an order's saga, read reconciliation reports,
re-send a webhook delivery.

Each action is an update of the order's saga — the same ones the Temporal Web UI and the
`temporal` CLI send — so its validator decides, and a refused action answers 409 with its
reason. An order whose saga has ended has nothing left to act on: 409 too, saying so.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field, model_validator
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import AdminIdentity, AppState, State
from api.orders import ERRORS, OrderId, known_order, known_order_public
from api.problems import ApiProblem
from api.temporal import is_not_found, reaching_temporal
from api.webhooks import DeliveryId, DeliveryPublic, resend_delivery
from core.contracts import DeadlineExtension, OperatorAction, RefundRetry, Resolution
from core.public import OrderPublic
from core.temporal import failure_reason
from core.vocabulary import order_workflow_id
from store import orders, reconciliation
from store.db import transaction
from workflows.order import OrderWorkflow

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Note = Annotated[str | None, Field(max_length=500)]
REFUSED: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"description": "The action does not apply to the order now: the reason says why"},
}


class CancelBody(BaseModel):
    note: Note = None


class ExtendBody(BaseModel):
    """The new deadline, given as a time or as seconds past the current one."""

    until: AwareDatetime | None = None
    extend_by_seconds: int | None = Field(default=None, gt=0)
    note: Note = None

    @model_validator(mode="after")
    def _one_of(self) -> ExtendBody:
        if (self.until is None) == (self.extend_by_seconds is None):
            raise ValueError("give either until or extend_by_seconds")
        return self


class RetryBody(BaseModel):
    note: Note = None


class ResolveBody(BaseModel):
    action: Literal["refund", "accept"]
    note: str = Field(min_length=1, max_length=500)


class Finding(BaseModel):
    kind: str
    order_id: str
    trade_no: str | None = None
    action: str


class ReconciliationRunPublic(BaseModel):
    workflow_run_id: str
    started_at: datetime
    finished_at: datetime
    findings: list[Finding]


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic, responses=REFUSED)
async def cancel(
    order_id: OrderId, body: CancelBody, state: State, _: AdminIdentity
) -> OrderPublic:
    """Cancel a pending order and close its trade (a payment that got there first wins)."""
    await _act(state, order_id, lambda saga: saga.execute_update(OrderWorkflow.cancel))
    with transaction(state.engine) as session:
        action = OperatorAction(order_id=order_id, action="cancel", note=body.note)
        orders.record_action(session, action=action, now=datetime.now(UTC))
        return known_order_public(session.connection(), order_id, state)


@router.post("/orders/{order_id}/extend", response_model=OrderPublic, responses=REFUSED)
async def extend(
    order_id: OrderId, body: ExtendBody, state: State, _: AdminIdentity
) -> OrderPublic:
    """Move a pending order's payment deadline later, within its trade's life at the gateway."""
    until = body.until
    if until is None:
        with transaction(state.engine) as session:
            current = known_order(session, order_id).expires_at
        until = current + timedelta(seconds=body.extend_by_seconds or 0)
    extension = DeadlineExtension(until=until.astimezone(UTC), note=body.note)
    await _act(
        state, order_id, lambda saga: saga.execute_update(OrderWorkflow.extend_deadline, extension)
    )
    return _order(state, order_id)


@router.post("/orders/{order_id}/retry-refund", response_model=OrderPublic, responses=REFUSED)
async def retry_refund(
    order_id: OrderId, body: RetryBody, state: State, _: AdminIdentity
) -> OrderPublic:
    """Try again a refund the gateway refused; answers once it is confirmed or refused again."""
    retry = RefundRetry(note=body.note)
    await _act(state, order_id, lambda saga: saga.execute_update(OrderWorkflow.retry_refund, retry))
    return _order(state, order_id)


@router.post("/orders/{order_id}/resolve", response_model=OrderPublic, responses=REFUSED)
async def resolve(
    order_id: OrderId, body: ResolveBody, state: State, _: AdminIdentity
) -> OrderPublic:
    """Settle a flagged order: `refund` a paid order's money (the days it bought are taken
    back), or `accept` it as it is; the note says why."""
    resolution = Resolution(action=body.action, note=body.note)
    await _act(state, order_id, lambda saga: saga.execute_update(OrderWorkflow.resolve, resolution))
    return _order(state, order_id)


@router.get(
    "/reconciliation/runs",
    response_model=list[ReconciliationRunPublic],
    responses={401: ERRORS[401], 422: ERRORS[422]},
)
def reconciliation_runs(
    state: State,
    _: AdminIdentity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[ReconciliationRunPublic]:
    """The latest reconciliation runs, newest first: what each found and did about it."""
    with transaction(state.engine) as session:
        runs = reconciliation.recent_runs(session, limit=limit)
        return [
            ReconciliationRunPublic(
                workflow_run_id=run.workflow_run_id,
                started_at=run.started_at,
                finished_at=run.finished_at,
                findings=json.loads(run.report)["findings"],
            )
            for run in runs
        ]


@router.post(
    "/webhook-deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=DeliveryPublic,
    responses={
        **ERRORS,
        404: {"description": "Unknown delivery"},
        409: {"description": "The delivery's endpoint is disabled"},
    },
)
def resend_webhook_delivery(
    delivery_id: DeliveryId, state: State, _: AdminIdentity
) -> DeliveryPublic:
    """Send a webhook delivery again, whichever endpoint it is of: the same event (id and body),
    signed anew. One still pending is handed to its delivery workflow again."""
    return resend_delivery(state, delivery_id, endpoint_id=None)


async def _act(
    state: AppState,
    order_id: str,
    action: Callable[[WorkflowHandle[OrderWorkflow, Any]], Awaitable[object]],
) -> None:
    with transaction(state.engine) as session:
        order = known_order(session, order_id)
        status = order.status
    saga = state.temporal.get_workflow_handle_for(OrderWorkflow.run, order_workflow_id(order_id))
    try:
        with reaching_temporal("nothing was done"):
            await action(saga)
    except WorkflowUpdateFailedError as refused:
        raise ApiProblem(409, failure_reason(refused)) from refused
    except RPCError as failure:
        if not is_not_found(failure):
            raise
        raise ApiProblem(
            409, f"order {order_id} is {status} and its saga has ended: there is nothing to act on"
        ) from failure


def _order(state: AppState, order_id: str) -> OrderPublic:
    with state.engine.connect() as connection:
        return known_order_public(connection, order_id, state)
