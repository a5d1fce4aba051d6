"""What Temporal knows of the sagas: whether an order's saga still runs."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.vocabulary import order_workflow_id


class SagaActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def running_order_sagas(self, order_ids: list[str]) -> list[str]:
        """Those of the orders whose saga is running: the rest have nobody to end them."""
        running = await asyncio.gather(*(self._runs(order_id) for order_id in order_ids))
        return [order_id for order_id, runs in zip(order_ids, running, strict=True) if runs]

    async def _runs(self, order_id: str) -> bool:
        try:
            described = await self._client.get_workflow_handle(
                order_workflow_id(order_id)
            ).describe()
        except RPCError as failure:
            if failure.status == RPCStatusCode.NOT_FOUND:
                return False  # never started, or deleted by the namespace's retention
            raise
        return described.status == WorkflowExecutionStatus.RUNNING
