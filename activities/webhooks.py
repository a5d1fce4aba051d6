"""Webhook activities: find an endpoint's next pending delivery of an order, send it, give it up.

No secret and no event body crosses Temporal: `deliver` takes a delivery's id, reads the
endpoint and the event from the database, and opens the endpoint's sealed secrets itself. Each
attempt is recorded — its time, status code or error, duration — before Temporal hears how it
went. A 2xx ends the delivery, a 410 ends it and disables its endpoint; anything else is raised
for Temporal to retry, with the backoff the delivery workflow gives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import Executor
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import httpx
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.codec import EncryptionCodec
from core.contracts import DeliveryEnd, PendingDelivery, WebhookRun
from core.standard_webhooks import signed_headers
from core.vocabulary import EventType
from store import webhooks
from store.db import transaction
from store.models import AttemptOutcome, DeliveryStatus
from store.webhooks import Attempt, Outgoing

# A receiver that has not answered by then is taken as down: the attempt is retried later.
HTTP_TIMEOUT_SECONDS = 10
# While a delivery waits, the activity says it is alive this often: a worker that dies in the
# middle of one is noticed in seconds, not at the attempt's timeout.
HEARTBEAT_SECONDS = 1
T = TypeVar("T")


class WebhookActivities:
    def __init__(
        self, engine: Engine, *, http: httpx.AsyncClient, codec: EncryptionCodec, executor: Executor
    ) -> None:
        self._engine = engine
        self._http = http
        self._codec = codec
        # The database calls of `deliver`, off the event loop.
        self._executor = executor

    @activity.defn
    def next_delivery(self, run: WebhookRun) -> PendingDelivery | None:
        """The endpoint's pending delivery of the order's earliest event not yet delivered."""
        with transaction(self._engine) as session:
            found = webhooks.next_pending(
                session, endpoint_id=run.endpoint_id, order_id=run.order_id
            )
            if found is None:
                return None
            delivery, event = found
            return PendingDelivery(
                delivery_id=delivery.id, event_id=event.id, event_type=EventType(event.type)
            )

    @activity.defn
    async def deliver(self, delivery_id: str) -> DeliveryEnd:
        """POST the event, signed, to its endpoint once; raises, to be retried, unless the
        receiver took it (2xx) or refused it for good (410)."""
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        outgoing = await _heartbeating(
            loop.run_in_executor(self._executor, partial(self._outgoing, delivery_id, now))
        )
        if outgoing is None:
            return DeliveryEnd(outcome="not_pending")
        headers = signed_headers(
            outgoing.secrets,
            event_id=outgoing.event_id,
            timestamp=int(now.timestamp()),
            body=outgoing.body,
        )
        started = time.monotonic()
        outcome, status_code, error = await _heartbeating(
            self._post(outgoing.url, outgoing.body, headers)
        )
        attempt = Attempt(
            at=now,
            outcome=outcome,
            status_code=status_code,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        status = await _heartbeating(
            loop.run_in_executor(self._executor, partial(self._record, delivery_id, attempt))
        )
        if outcome == AttemptOutcome.DELIVERED:
            return DeliveryEnd(outcome="delivered")
        if outcome == AttemptOutcome.GONE:
            return DeliveryEnd(outcome="gone")
        if status != DeliveryStatus.PENDING:
            return DeliveryEnd(outcome="not_pending")  # cancelled while it was on its way
        raise ApplicationError(error or "not delivered", type="NotDelivered")

    @activity.defn
    def give_up(self, delivery_id: str) -> None:
        """No 2xx within the retry span: the delivery has failed."""
        with transaction(self._engine) as session:
            webhooks.give_up(session, delivery_id=delivery_id, now=datetime.now(UTC))

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[AttemptOutcome, int | None, str | None]:
        try:
            # Streamed and left unread: a receiver's answer is its status code, however long
            # the body it sends along.
            async with self._http.stream(
                "POST", url, content=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS
            ) as response:
                code = response.status_code
        except httpx.TimeoutException:
            return AttemptOutcome.TIMEOUT, None, f"no answer within {HTTP_TIMEOUT_SECONDS} s"
        except httpx.HTTPError as failure:
            return AttemptOutcome.UNREACHABLE, None, f"{type(failure).__name__}: {failure}"
        if 200 <= code < 300:
            return AttemptOutcome.DELIVERED, code, None
        if code == 410:
            return AttemptOutcome.GONE, code, None
        return AttemptOutcome.REFUSED, code, f"the receiver answered {code}"

    def _outgoing(self, delivery_id: str, now: datetime) -> Outgoing | None:
        with transaction(self._engine) as session:
            return webhooks.outgoing(session, delivery_id=delivery_id, codec=self._codec, now=now)

    def _record(self, delivery_id: str, attempt: Attempt) -> DeliveryStatus:
        with transaction(self._engine) as session:
            return webhooks.record_attempt(session, delivery_id=delivery_id, attempt=attempt)


async def _heartbeating(work: Awaitable[T]) -> T:
    """`work`'s result, the activity saying all the while that it is alive: while a receiver
    makes it wait, or the database."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
            activity.heartbeat()
        return task.result()
    finally:
        task.cancel()
