"""The paysaga worker (`paysaga worker`): runs the order sagas and their activities on the task
queue, webhook deliveries on a task queue of their own, and the relay that hands decided
deliveries to Temporal."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
)
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from activities.local_budget import LocalStepBudget
from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from activities.sagas import SagaActivities
from activities.webhooks import HTTP_TIMEOUT_SECONDS, WebhookActivities
from core.contracts import Reconciliation
from core.logs import configure_logging
from core.settings import Settings, SettingsError
from core.temporal import connect_temporal, payload_codec
from core.vocabulary import RECONCILE_WORKFLOW_ID, Gateway
from gateways.breaker import Breaker
from gateways.gateway import PaymentGateway
from gateways.registry import payment_gateways
from paysaga.webhook_relay import WebhookRelay
from store import breakers
from store.db import create_db_engine, transaction
from workflows.late_payment import LatePaymentWorkflow
from workflows.order import OrderWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.recovery import RecoverOrderWorkflow
from workflows.webhooks import WebhookDeliveryWorkflow

SAGAS = [OrderWorkflow, LatePaymentWorkflow, RecoverOrderWorkflow, ReconcileWorkflow]
# Every workflow paysaga runs, wherever it runs: what recorded histories replay on.
WORKFLOWS = [*SAGAS, WebhookDeliveryWorkflow]
# A run that outlives this was stuck (a worker could not replay it): the next one takes over,
# and the sagas it started go on without it.
RECONCILE_RUN_TIMEOUT = timedelta(hours=1)
# Database activities are blocking SQLModel calls: they run on these threads.
DATABASE_THREADS = 16
# Webhook deliveries wait on receivers without a thread; their database calls, and the
# relay's, have threads of their own, so that no receiver can take the sagas' threads.
WEBHOOK_DATABASE_THREADS = 8
logger = logging.getLogger("paysaga")


# A new saga's first workflow task comes on the task queue itself, the later ones on the
# worker's own sticky queue. The SDK's default of 5 pollers, a fifth of them on the task queue,
# left one poller per worker for every new saga, whose QR code waits on that task: under the
# benchmark's load it waited 131 ms at p50 and 718 ms at p99 to be taken, and 63 and 237 ms
# with five pollers of ten there.
WORKFLOW_TASK_POLLING: dict[str, Any] = {
    "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(maximum=10),
    "nonsticky_to_sticky_poll_ratio": 0.5,
}


def build_worker(
    client: Client,
    *,
    task_queue: str,
    order_activities: OrderActivities,
    payment_activities: PaymentActivities,
    executor: ThreadPoolExecutor,
) -> Worker:
    saga_activities = SagaActivities(client)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=SAGAS,
        **WORKFLOW_TASK_POLLING,
        activities=[
            order_activities.claim_reservation,
            order_activities.abandon_creation,
            order_activities.record_payment_instructions,
            order_activities.start_payment,
            order_activities.settle_payment,
            order_activities.complete_refund,
            order_activities.fail_refund,
            order_activities.end_order,
            order_activities.extend_deadline,
            order_activities.reopen_refund,
            order_activities.refund_paid_order,
            order_activities.accept_flag,
            order_activities.undecided_payments,
            order_activities.find_unfinished,
            order_activities.record_reconciliation,
            saga_activities.running_order_sagas,
            payment_activities.create_payment,
            payment_activities.check_trade,
            payment_activities.close_trade,
            payment_activities.refund_payment,
            payment_activities.confirm_refund,
        ],
        activity_executor=executor,
        # The saga's creation steps are local activities: without it, one whose attempts fail
        # would be retried past its budget, for ever.
        interceptors=[LocalStepBudget()],
        # Time for the activities in hand to finish when the worker is asked to stop.
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


def build_webhook_worker(
    client: Client, *, task_queue: str, activities: WebhookActivities, executor: ThreadPoolExecutor
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[WebhookDeliveryWorkflow],
        activities=[activities.next_delivery, activities.deliver, activities.give_up],
        activity_executor=executor,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def schedule_reconciliation(client: Client, settings: Settings) -> None:
    """Run the reconciliation saga on a schedule: made by whichever worker comes first, and
    brought in line with the settings by every worker that starts (an operator's pause stays)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            Reconciliation(older_than_seconds=settings.reconcile_after_seconds),
            id=RECONCILE_WORKFLOW_ID,
            task_queue=settings.task_queue,
            execution_timeout=RECONCILE_RUN_TIMEOUT,
            static_summary="reconciliation: drive unfinished work to its end",
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

        def in_line(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(RECONCILE_WORKFLOW_ID).update(in_line)


class GatewayBreakers:
    """Each gateway behind its breaker, whose changes go to the database, where every API
    process reads them, and which is probed while open."""

    def __init__(
        self,
        gateways: Mapping[Gateway, PaymentGateway],
        *,
        settings: Settings,
        engine: Engine,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._engine = engine
        self._executor = executor
        self._writes: set[asyncio.Future[None]] = set()
        # When each breaker open here was opened, here or as recorded elsewhere: only a closing
        # recorded after it closes it.
        self._opened_at: dict[Gateway, datetime] = {}
        self.gateways = {
            name: Breaker(
                gateway,
                failure_ratio=settings.breaker_failure_ratio,
                window_seconds=settings.breaker_window_seconds,
                min_calls=settings.breaker_min_calls,
                on_change=partial(self._changed, name),
            )
            for name, gateway in gateways.items()
        }

    async def watch(self, *, every: float) -> None:
        """Forever: take over the openings and closings other workers recorded, and probe the
        open ones."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                recorded = await loop.run_in_executor(self._executor, self._recorded)
            except SQLAlchemyError as failure:
                logger.warning("cannot read the gateway breakers: %s", failure)
                recorded = {}
            for name, breaker in self.gateways.items():
                if name not in recorded:
                    continue
                is_open, changed_at = recorded[name]
                if is_open:
                    # An opening recorded by a worker that has since gone would otherwise stay
                    # open for good: nobody else would probe it.
                    self._opened_at[name] = max(changed_at, self._opened_at.get(name, changed_at))
                    breaker.hold_open()
                elif breaker.is_open and changed_at > self._opened_at.get(name, changed_at):
                    # Another worker's call got through since: were this one to stay open on
                    # its own failing probes, its failures would never be reported again.
                    breaker.hold_closed()
            await asyncio.gather(
                *(breaker.probe() for breaker in self.gateways.values() if breaker.is_open)
            )
            await asyncio.sleep(every)

    def _changed(self, gateway: Gateway, is_open: bool, reason: str) -> None:
        logger.warning("%s breaker %s: %s", gateway, "opened" if is_open else "closed", reason)
        # Stamped now, on the event loop, so that the store can drop writes that land late.
        now = datetime.now(UTC)
        if is_open:
            self._opened_at[gateway] = now
        write = asyncio.get_running_loop().run_in_executor(
            self._executor, partial(self._record, gateway, is_open, reason, now)
        )
        self._writes.add(write)
        write.add_done_callback(self._written)

    def _record(self, gateway: Gateway, is_open: bool, reason: str, now: datetime) -> None:
        with transaction(self._engine) as session:
            breakers.record_breaker(
                session, gateway=gateway, is_open=is_open, reason=reason, now=now
            )

    def _recorded(self) -> dict[str, tuple[bool, datetime]]:
        """Each recorded gateway's breaker: whether it is open, and since when."""
        with transaction(self._engine) as session:
            return {
                row.gateway: (row.open, row.changed_at) for row in breakers.read_breakers(session)
            }

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and (failure := write.exception()) is not None:
            # Not lost for good: a "closed" not recorded is found open by `watch`, which probes
            # and records it again; an "open" not recorded is recorded at the next opening.
            logger.error("the breaker change was not recorded: %s", failure)


def worker_runtime(settings: Settings) -> Runtime:
    """The Temporal SDK's runtime for a worker: its core's logs go through ours (one format on
    every line), and its metrics are served for Prometheus at PAYSAGA_WORKER_METRICS_ADDRESS,
    path /metrics, unless that is empty."""
    address = settings.worker_metrics_address.strip()
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=LoggingConfig.default.filter,
                    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
                ),
                metrics=PrometheusConfig(bind_address=address) if address else None,
            )
        )
    except ValueError as failure:
        # A bad address, or one another process (a second worker?) already serves on.
        raise SettingsError(f"PAYSAGA_WORKER_METRICS_ADDRESS {address}: {failure}") from failure


async def run_worker(settings: Settings) -> None:
    engine = create_db_engine(
        settings.resolved_database_url, public_base_url=settings.public_base_url
    )
    client = await connect_temporal(settings, runtime=worker_runtime(settings))
    await schedule_reconciliation(client, settings)
    async with (
        httpx.AsyncClient(timeout=15) as http,
        httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as receivers,
    ):
        with (
            ThreadPoolExecutor(max_workers=DATABASE_THREADS) as executor,
            ThreadPoolExecutor(max_workers=WEBHOOK_DATABASE_THREADS) as webhook_executor,
        ):
            gateways = GatewayBreakers(
                payment_gateways(settings, http),
                settings=settings,
                engine=engine,
                executor=executor,
            )
            workers = [
                build_worker(
                    client,
                    task_queue=settings.task_queue,
                    order_activities=OrderActivities(engine),
                    payment_activities=PaymentActivities(gateways.gateways),
                    executor=executor,
                ),
                build_webhook_worker(
                    client,
                    task_queue=settings.webhook_task_queue,
                    activities=WebhookActivities(
                        engine,
                        http=receivers,
                        codec=payload_codec(settings),
                        executor=webhook_executor,
                    ),
                    executor=webhook_executor,
                ),
            ]
            relay = WebhookRelay(
                client, engine=engine, settings=settings, executor=webhook_executor
            )
            logger.info(
                "worker polling %s and %s on %s",
                settings.task_queue,
                settings.webhook_task_queue,
                settings.temporal_address,
            )
            # docker stop, systemd and `paysaga dev` send SIGTERM: finish the activities in
            # hand and leave, instead of leaving them to time out.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM,
                lambda: [asyncio.ensure_future(worker.shutdown()) for worker in workers],
            )
            watching = asyncio.create_task(gateways.watch(every=settings.breaker_probe_seconds))
            relaying = asyncio.create_task(relay.run())
            try:
                await _until_one_stops(workers, relaying)
            finally:
                watching.cancel()
                relaying.cancel()
                # Let a probe in flight end before its HTTP client closes.
                await asyncio.gather(watching, relaying, return_exceptions=True)
    engine.dispose()


async def _until_one_stops(workers: list[Worker], relaying: asyncio.Task[None]) -> None:
    """Run the workers until one of them, or the relay, stops; then stop them all. A process
    that runs sagas but delivers no webhook, or the reverse, is better ended and restarted."""
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    await asyncio.wait([*runs, relaying], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    for finished in [*runs, relaying]:
        if finished.done():
            finished.result()


def main() -> None:
    settings = Settings()
    configure_logging(settings)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
