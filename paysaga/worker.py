"""The paysaga worker: runs the order sagas and their activities (`paysaga worker`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.worker import Worker

from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from core.contracts import Reconciliation
from core.settings import Settings
from core.temporal import connect_temporal
from core.vocabulary import RECONCILE_WORKFLOW_ID
from gateways.registry import payment_gateways
from store.db import create_db_engine, create_tables
from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow
from workflows.reconcile import ReconcileWorkflow

WORKFLOWS = [OrderWorkflow, LatePaymentWorkflow, ReconcileWorkflow]
# Database activities are blocking SQLModel calls: they run on these threads.
DATABASE_THREADS = 16


def build_worker(
    client: Client,
    *,
    task_queue: str,
    order_activities: OrderActivities,
    payment_activities: PaymentActivities,
    executor: ThreadPoolExecutor,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            order_activities.claim_reservation,
            order_activities.record_payment_instructions,
            order_activities.settle_payment,
            order_activities.complete_refund,
            order_activities.fail_refund,
            order_activities.end_order,
            order_activities.undecided_payments,
            payment_activities.create_payment,
            payment_activities.check_trade,
            payment_activities.close_trade,
            payment_activities.refund_payment,
            payment_activities.confirm_refund,
        ],
        activity_executor=executor,
        # Time for the activities in hand to finish when the worker is asked to stop.
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def schedule_reconciliation(client: Client, settings: Settings) -> None:
    """Run the reconciliation saga on a schedule, made once by whichever worker comes first."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            Reconciliation(older_than_seconds=settings.reconcile_after_seconds),
            id=RECONCILE_WORKFLOW_ID,
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=settings.reconcile_every_seconds))
            ]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(RECONCILE_WORKFLOW_ID, schedule)
    except ScheduleAlreadyRunningError:
        pass


async def run_worker(settings: Settings) -> None:
    engine = create_db_engine(settings.resolved_database_url)
    create_tables(engine)
    client = await connect_temporal(settings)
    await schedule_reconciliation(client, settings)
    async with httpx.AsyncClient(timeout=15) as http:
        with ThreadPoolExecutor(max_workers=DATABASE_THREADS) as executor:
            worker = build_worker(
                client,
                task_queue=settings.task_queue,
                order_activities=OrderActivities(engine),
                payment_activities=PaymentActivities(payment_gateways(settings, http)),
                executor=executor,
            )
            logging.getLogger("paysaga").info(
                "worker polling %s on %s", settings.task_queue, settings.temporal_address
            )
            # docker stop, systemd and `paysaga dev` send SIGTERM: finish the activities in
            # hand and leave, instead of leaving them to time out.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: asyncio.ensure_future(worker.shutdown())
            )
            await worker.run()
    engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run_worker(Settings()))


if __name__ == "__main__":
    main()
