"""What the API tells Prometheus at `GET /metrics`.

- `paysaga_http_requests_total{method, route, code}` and
  `paysaga_http_request_duration_seconds{method, route}`: every request, by its route's
  template (`/v1/orders/{order_id}`), never its raw path; a path no route matches counts as
  `route="unmatched"`, a method but the usual seven as `method="other"`. So the number of
  series stays bounded whatever strangers send, and no order id becomes a label.
- `paysaga_callbacks_total{gateway, outcome, code}`: the gateways' notifications, by what
  became of them and the status code answered. Taken: `payment` (handed on to a saga),
  `duplicate` (a payment already decided), `refund` and `other` (news that moves no money
  in), `flagged` (a payment without an amount); not taken: `refused` (not verified, not ours,
  or a replay), `failed` (the database or Temporal unavailable: the gateway sends it again).
- `paysaga_orders{kind, status, gateway}`, `paysaga_flagged_orders{kind, status, gateway}`,
  `paysaga_refunds{gateway, status}`, `paysaga_webhook_deliveries{status}`,
  `paysaga_webhook_attempts{outcome}` and `paysaga_database_up`: read from the database at each
  scrape.

Each app has its own registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import get_args

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.contracts import Finding
from core.vocabulary import Gateway, OrderKind, OrderStatus
from store import stats
from store.db import transaction
from store.models import AttemptOutcome, DeliveryStatus, RefundStatus

UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# An order waits for its saga's QR code up to PAYSAGA_PAYMENT_CREATE_TIMEOUT_SECONDS (20):
# the buckets reach past it, so that a slow gateway shows as slow, not as "over 10 s".
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
logger = logging.getLogger(__name__)


class Metrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "paysaga_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        # Without the code: its buckets times every status code would be most of the series.
        self.http_latency = Histogram(
            "paysaga_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.callbacks = Counter(
            "paysaga_callbacks",
            "Gateway notifications by gateway, outcome and the status code answered",
            ["gateway", "outcome", "code"],
            registry=self.registry,
        )

    def count_callback(self, *, gateway: Gateway, outcome: str, code: int) -> None:
        self.callbacks.labels(gateway=str(gateway), outcome=outcome, code=str(code)).inc()

    def exposition(self, engine: Engine) -> bytes:
        """The text a scrape gets: this process's counters, then the database's facts."""
        return generate_latest(self.registry) + generate_latest(StoreFacts(engine))


def app_metrics(request: Request) -> Metrics:
    metrics = request.app.state.metrics
    assert isinstance(metrics, Metrics)
    return metrics


class RequestMetrics:
    """Counts and times every HTTP request. A pure ASGI middleware, outermost, so that it sees
    what the others answer too (a 413 from the body limits) and holds no body."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        # What a failure that escapes every handler is answered with, outside us.
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            # The router leaves the route it matched in the scope, also for a 405.
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else UNMATCHED_ROUTE
            self._metrics.http_requests.labels(method, template, str(status)).inc()
            self._metrics.http_latency.labels(method, template).observe(
                time.perf_counter() - started
            )


FINDING_KINDS = get_args(Finding.model_fields["kind"].annotation)


class StoreFacts(Collector):
    """Orders, refunds and webhook deliveries by status, read from the database when scraped.

    Gauges of what the database holds, not counters kept by the workers: every API replica
    reports the same truth, the numbers survive restarts and deploys, and an order changed by
    hand or by a worker that crashed before it could count is still counted right.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "paysaga_database_up", "1 if the database answered this scrape's queries, else 0"
        )
        try:
            with transaction(self._engine) as session:
                orders = stats.order_tallies(session)
                refunds = stats.refund_tallies(session)
                reconciled = stats.last_reconciliation(session)
                deliveries = stats.delivery_tallies(session)
                attempts = stats.attempt_tallies(session)
        except SQLAlchemyError as failure:
            # Its kind only: the driver's message may name the server and the user.
            logger.warning("metrics: the database did not answer: %s", type(failure).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _order_families(orders)
        yield _refund_family(refunds)
        yield from _reconciliation_families(reconciled)
        yield _tally_family(
            "paysaga_webhook_deliveries",
            "Webhook deliveries by status (failed: given up, or refused with 410)",
            "status",
            DeliveryStatus,
            deliveries,
        )
        yield _tally_family(
            "paysaga_webhook_attempts",
            "Webhook delivery attempts by outcome",
            "outcome",
            AttemptOutcome,
            attempts,
        )


def _order_families(tallies: Iterable[stats.OrderTally]) -> Iterator[GaugeMetricFamily]:
    labels = ["kind", "status", "gateway"]
    orders = GaugeMetricFamily(
        "paysaga_orders", "Orders by kind, status and gateway", labels=labels
    )
    flagged = GaugeMetricFamily(
        "paysaga_flagged_orders",
        "Orders flagged for an operator, by kind, status and gateway",
        labels=labels,
    )
    # Every combination the vocabulary allows is reported, as 0 when empty, so that an alert
    # on "refunded orders > 0" sees a 0 before the first one rather than nothing.
    counts = {
        (str(kind), str(status), str(gateway)): (0, 0)
        for kind, status, gateway in itertools.product(OrderKind, OrderStatus, Gateway)
    }
    for tally in tallies:
        counts[(tally.kind, tally.status, tally.gateway)] = (tally.orders, tally.flagged)
    for (kind, status, gateway), (count, flagged_count) in sorted(counts.items()):
        orders.add_metric([kind, status, gateway], count)
        flagged.add_metric([kind, status, gateway], flagged_count)
    yield orders
    yield flagged


def _refund_family(tallies: Iterable[stats.RefundTally]) -> GaugeMetricFamily:
    refunds = GaugeMetricFamily(
        "paysaga_refunds", "Refunds by gateway and status", labels=["gateway", "status"]
    )
    counts = {
        (str(gateway), str(status)): 0
        for gateway, status in itertools.product(Gateway, RefundStatus)
    }
    for tally in tallies:
        counts[(tally.gateway, tally.status)] = tally.refunds
    for (gateway, status), count in sorted(counts.items()):
        refunds.add_metric([gateway, status], count)
    return refunds


def _tally_family(
    name: str, documentation: str, label: str, values: Iterable[str], tally: Mapping[str, int]
) -> GaugeMetricFamily:
    # Every value, 0 when there is none: an alert on "failed > 0" sees the 0 first.
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value in values:
        family.add_metric([str(value)], tally.get(value, 0))
    return family


def _reconciliation_families(
    tally: stats.ReconciliationTally | None,
) -> Iterator[GaugeMetricFamily]:
    findings = GaugeMetricFamily(
        "paysaga_reconciliation_findings",
        "What the latest reconciliation run found left undone, by kind (each driven to its end)",
        labels=["kind"],
    )
    for kind in FINDING_KINDS:
        findings.add_metric([kind], 0 if tally is None else tally.findings[kind])
    yield findings
    if tally is not None:
        finished = GaugeMetricFamily(
            "paysaga_reconciliation_last_run_timestamp_seconds",
            "When the latest reconciliation run finished (Unix time): alert when it is old",
        )
        finished.add_metric([], tally.finished_at.timestamp())
        yield finished
