"""The outbox relay: hands each decided webhook delivery to the delivery workflow of its
endpoint and order. It runs in every worker process.

Events and their deliveries are written in the transaction of the change they tell of
(store.events); Temporal is told afterwards, here. Each round claims the deliveries due —
leased to this relay for a while, so that other relays skip them (on PostgreSQL also while the
claim is being made: `FOR UPDATE SKIP LOCKED`) — and commits; then, no transaction held open,
it signal-with-starts one workflow per endpoint and order, and marks those deliveries handed
over. A relay that dies between its claim and its mark (or cannot reach Temporal) leaves
deliveries whose lease runs out: the next round, on any worker, hands them over again. A
delivery handed over twice is delivered once all the same: its workflow asks the database what
is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from core.contracts import WebhookRun
from core.settings import Settings
from core.vocabulary import webhook_workflow_id
from store import webhooks
from store.db import transaction
from workflows import search_attributes
from workflows.webhooks import WebhookDeliveryWorkflow

# Long enough for a round's calls to Temporal; a relay gone for longer is taken over.
LEASE = timedelta(seconds=60)
BATCH = 200
TEMPORAL_CALL_TIMEOUT = timedelta(seconds=10)
logger = logging.getLogger(__name__)


class WebhookRelay:
    def __init__(
        self, client: Client, *, engine: Engine, settings: Settings, executor: Executor
    ) -> None:
        self._client = client
        self._engine = engine
        self._settings = settings
        self._executor = executor

    async def run(self) -> None:
        """Forever: a round every PAYSAGA_WEBHOOK_RELAY_EVERY_SECONDS, or at once after a full
        batch."""
        while True:
            try:
                handed = await self.relay_once()
            except SQLAlchemyError as failure:
                logger.warning("webhook relay: the database did not answer: %s", failure)
                handed = 0
            if handed < BATCH:
                await asyncio.sleep(self._settings.webhook_relay_every_seconds)

    async def relay_once(self) -> int:
        """Hand over the deliveries due now; how many were."""
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        lease_until = now + LEASE
        due = await loop.run_in_executor(self._executor, partial(self._claim, now, lease_until))
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for delivery in due:
            groups[(delivery.endpoint_id, delivery.order_id)].append(delivery.delivery_id)
        handed: list[str] = []
        for (endpoint_id, order_id), delivery_ids in groups.items():
            try:
                await self._start_or_signal(endpoint_id, order_id)
            except RPCError as failure:
                logger.warning(
                    "webhook relay: deliveries of %s to %s not handed over yet: %s",
                    order_id,
                    endpoint_id,
                    failure,
                )
                continue
            handed += delivery_ids
        if handed:
            await loop.run_in_executor(
                self._executor, partial(self._handed_over, handed, lease_until)
            )
        return len(due)

    async def _start_or_signal(self, endpoint_id: str, order_id: str) -> None:
        settings = self._settings
        await self._client.start_workflow(
            WebhookDeliveryWorkflow.run,
            WebhookRun(
                endpoint_id=endpoint_id,
                order_id=order_id,
                retry_initial_seconds=settings.webhook_retry_initial_seconds,
                give_up_seconds=settings.webhook_give_up_seconds,
            ),
            id=webhook_workflow_id(endpoint_id, order_id),
            task_queue=settings.webhook_task_queue,
            # Running: it is signalled; ended, or never started: a new run begins.
            start_signal=WebhookDeliveryWorkflow.deliveries_pending.__name__,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(search_attributes.ORDER_ID, order_id)]
            ),
            static_summary=f"events of order {order_id} to webhook endpoint {endpoint_id}",
            rpc_timeout=TEMPORAL_CALL_TIMEOUT,
        )

    def _claim(self, now: datetime, lease_until: datetime) -> list[webhooks.Due]:
        with transaction(self._engine) as session:
            return webhooks.claim_due(session, now=now, lease_until=lease_until, limit=BATCH)

    def _handed_over(self, delivery_ids: list[str], lease_until: datetime) -> None:
        with transaction(self._engine) as session:
            webhooks.handed_over(session, delivery_ids=delivery_ids, lease_until=lease_until)
