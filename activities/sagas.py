"""What Temporal knows of the sagas: whether something still runs to end an order."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.vocabulary import order_workflow_id, recovery_workflow_id


class SagaActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def running_order_sagas(self, order_ids: list[str]) -> list[str]:
        """Those of the orders whose saga, or a recovery of them, is running: the rest have
        nobody to end them. A recovery counts, so that its refund, left unconfirmed while it
        waits, is not resumed beside it by a late-payment saga."""
        running = await asyncio.gather(*(self._in_hand(order_id) for order_id in order_ids))
        return [order_id for order_id, runs in zip(order_ids, running, strict=True) if runs]

    async def _in_hand(self, order_id: str) -> bool:
        sagas = (order_workflow_id(order_id), recovery_workflow_id(order_id))
        return any(await asyncio.gather(*(self._runs(workflow_id) for workflow_id in sagas)))

    async def _runs(self, workflow_id: str) -> bool:
        try:
            described = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as failure:
            if failure.status == RPCStatusCode.NOT_FOUND:
                return False  # never started, or deleted by the namespace's retention
            raise
        return described.status == WorkflowExecutionStatus.RUNNING
