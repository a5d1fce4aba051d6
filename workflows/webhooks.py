"""Webhook deliveries: one workflow per endpoint and order sends that order's events to that
endpoint one at a time, in the order they happened.

1. ask the database for the endpoint's next pending delivery of the order — the earliest event
   still undelivered, by its number — rather than trust the order signals arrive in;
2. deliver it: one activity, one POST, retried by Temporal with exponential backoff (a status
   other than 2xx and 410, a timeout, no connection) until the give-up span is spent, and then
   recorded failed; a 410 disables the endpoint, whose other pending deliveries are cancelled;
3. again, until none is pending; then end — unless the relay signalled while the last ask was
   under way (a delivery decided at that moment, which the ask may have missed): ask again.

The relay (paysaga.webhook_relay) starts it, or signals it while it runs, for every delivery
decided. It runs on its own task queue: a receiver slow or down holds up no saga.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from core.contracts import PendingDelivery, WebhookRun
    from workflows.steps import DATABASE_STEP

# Longer than the receiver's 10 s to answer, with the attempt's records written around it.
ATTEMPT_TIMEOUT = timedelta(seconds=30)
# The attempt heartbeats every second while the receiver makes it wait: a worker lost in the
# middle of one is noticed after this, and the attempt made again elsewhere.
ATTEMPT_HEARTBEAT_TIMEOUT = timedelta(seconds=5)
# Waits between attempts double up to this: a receiver back after a long outage is not left
# waiting for hours.
LONGEST_WAIT = timedelta(hours=1)


@workflow.defn
class WebhookDeliveryWorkflow:
    def __init__(self) -> None:
        self._signals = 0

    @workflow.run
    async def run(self, run: WebhookRun) -> None:
        while True:
            signals_before = self._signals
            workflow.set_current_details("looking for the next pending delivery")
            pending: PendingDelivery | None = await workflow.execute_activity_method(
                WebhookActivities.next_delivery,
                run,
                summary="find the next pending delivery",
                **DATABASE_STEP,
            )
            if pending is None:
                if self._signals == signals_before:
                    return
                continue  # a delivery was handed over while we asked: ask again
            await self._deliver(pending, run)
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(run)

    @workflow.signal
    def deliveries_pending(self) -> None:
        """The relay handed over a delivery decided for this endpoint and order."""
        self._signals += 1

    async def _deliver(self, pending: PendingDelivery, run: WebhookRun) -> None:
        initial = timedelta(seconds=run.retry_initial_seconds)
        workflow.set_current_details(
            f"delivering {pending.event_type} {pending.event_id} (delivery {pending.delivery_id})"
        )
        try:
            await workflow.execute_activity_method(
                WebhookActivities.deliver,
                pending.delivery_id,
                summary=f"POST {pending.event_type} {pending.event_id}",
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                heartbeat_timeout=ATTEMPT_HEARTBEAT_TIMEOUT,
                schedule_to_close_timeout=timedelta(seconds=run.give_up_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=initial,
                    backoff_coefficient=2,
                    maximum_interval=max(initial, LONGEST_WAIT),
                ),
            )
        except ActivityError:
            # The give-up span is spent: every attempt and its error is on record.
            await workflow.execute_activity_method(
                WebhookActivities.give_up,
                pending.delivery_id,
                summary=f"give up delivery {pending.delivery_id}",
                **DATABASE_STEP,
            )
