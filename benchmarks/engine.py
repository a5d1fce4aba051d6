"""The engine's baseline: bare workflows of the order saga's shape on the same Temporal server.

A paid order's saga runs three activities (create the payment and claim the reservation, both
local, in its first workflow task; settle the payment), answers one update (the API's
update-with-start, which waits for the QR code) and takes one signal (the payment). The bare
workflow does the same with no-op activities of the same kinds, so what it costs is Temporal's
alone. Its worker runs as a process of its own, as ours do:

    python -m benchmarks.engine TEMPORAL_ADDRESS TASK_QUEUE
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from benchmarks.measure import Timed, pipelined

STEP = timedelta(seconds=30)


@activity.defn
async def create_payment(started_at: float) -> float:
    """No-op but for the time from the client's start to here, in ms (the same clock: one
    machine)."""
    return 1000 * (time.time() - started_at)


@activity.defn
async def claim_reservation() -> None:
    return None


@activity.defn
async def settle_payment() -> None:
    return None


@workflow.defn
class BareOrderWorkflow:
    def __init__(self) -> None:
        self._ready = False
        self._paid = False

    @workflow.run
    async def run(self, started_at: float) -> float:
        to_first_activity: float = await workflow.execute_local_activity(
            create_payment, started_at, start_to_close_timeout=STEP
        )
        await workflow.execute_local_activity(claim_reservation, start_to_close_timeout=STEP)
        self._ready = True
        await workflow.wait_condition(lambda: self._paid)
        await workflow.execute_activity(settle_payment, start_to_close_timeout=STEP)
        return to_first_activity

    @workflow.update
    async def payment_instructions(self) -> str:
        await workflow.wait_condition(lambda: self._ready)
        return "qr"

    @workflow.signal
    def payment_notified(self) -> None:
        self._paid = True


def bare_worker(client: Client, task_queue: str) -> Worker:
    # Not imported with the module, which the workflow sandbox imports afresh for each run.
    from paysaga.worker import WORKFLOW_TASK_POLLING

    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BareOrderWorkflow],
        # The engine polled as ours is, so that neither waits longer for its tasks by default.
        **WORKFLOW_TASK_POLLING,
        activities=[create_payment, claim_reservation, settle_payment],
    )


async def bare_orders(
    client: Client, task_queue: str, count: int, concurrency: int
) -> tuple[Timed, list[float]]:
    """`count` bare orders, `concurrency` at a time, each driven as the API and the buyer drive
    a real one: update-with-start until the QR code, then the payment's signal, then the end.
    Each one's time to its QR code, the wall time, and each one's time (ms) from its start to
    its first activity."""
    to_first_activity: list[float] = []

    async def one(n: int) -> float:
        started = time.perf_counter()
        start = WithStartWorkflowOperation(
            BareOrderWorkflow.run,
            time.time(),
            id=f"bare-order-{uuid.uuid4().hex}",
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        await client.execute_update_with_start_workflow(
            BareOrderWorkflow.payment_instructions, start_workflow_operation=start
        )
        created = time.perf_counter() - started
        handle: WorkflowHandle[BareOrderWorkflow, float] = await start.workflow_handle()
        await handle.signal(BareOrderWorkflow.payment_notified)
        to_first_activity.append(await handle.result())
        return created

    return await pipelined(count, concurrency, one), to_first_activity


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    await bare_worker(client, task_queue).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
