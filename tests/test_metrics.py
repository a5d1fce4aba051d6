"""What Prometheus sees: the API's `/metrics` over real HTTP on SQLite and PostgreSQL (requests by
route template, callbacks by outcome, orders and refunds as the database holds them), the
counts behind it (store.stats), and a worker's Temporal SDK metrics."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.engine import Engine
from temporalio.common import MetricMeter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.contracts import Finding, PaymentNotice, ReconciliationReport
from core.settings import Settings, SettingsError
from core.temporal import connect_temporal
from core.vocabulary import Gateway, OrderStatus, late_payment_workflow_id
from gateways.alipay_signing import load_private_key
from paysaga.dev import ensure_dev_keys
from paysaga.worker import worker_runtime
from stack.notifications import alipay_callback
from stack.ports import free_port
from stack.tcp_proxy import TcpProxy
from store import orders, reconciliation, stats
from store.db import transaction
from tests.databases import database
from tests.orders import claim
from tests.rig import running_worker, time_skipping_server
from tests.servers import serving
from tests.test_order_workflow import start_order
from workflows.order import OrderWorkflow

API_KEY = "psk_test_metrics_client"
LATE_TRADE = "2026112322001400000000000201"


# One per test: a saga left waiting for a worker (the late payment the callback test starts)
# stops the test server's clock for every later test.
@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as environment:
        yield environment


def pay(engine: Engine, order_id: str, trade_no: str, cents: int = 2970) -> None:
    now = datetime.now(UTC)
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY,
        order_id=order_id,
        trade_no=trade_no,
        amount_cents=cents,
        paid_at=now,
    )
    with transaction(engine) as session:
        orders.settle_payment(session, notice=notice, now=now)


def books(engine: Engine) -> None:
    """A booking paid, one superseded by it and paid anyway (so refunded), a renewal pending
    on Alipay, a booking pending on WeChat Pay and flagged, and one pending on Alipay."""
    claim(engine, "ord_superseded", reservation="room-1")
    claim(engine, "ord_paid", reservation="room-1")
    pay(engine, "ord_paid", "2026112322001400000000000101")
    pay(engine, "ord_superseded", "2026112322001400000000000102")
    claim(engine, "ord_renewal", reservation="room-1")
    claim(engine, "ord_flagged", reservation="room-2", gateway=Gateway.WECHATPAY)
    with transaction(engine) as session:
        now = datetime.now(UTC)
        orders.flag_order(session, order_id="ord_flagged", reason="checked by hand", now=now)
    claim(engine, "ord_pending", reservation="room-3")


def test_orders_and_refunds_are_counted_by_group(engine: Engine) -> None:
    with transaction(engine) as session:
        assert stats.order_tallies(session) == []
        assert stats.refund_tallies(session) == []
    books(engine)
    with transaction(engine) as session:
        assert stats.order_tallies(session) == [
            stats.OrderTally("booking", "paid", "alipay", orders=1, flagged=0),
            stats.OrderTally("booking", "pending", "alipay", orders=1, flagged=0),
            stats.OrderTally("booking", "pending", "wechatpay", orders=1, flagged=1),
            stats.OrderTally("booking", "superseded", "alipay", orders=1, flagged=0),
            stats.OrderTally("renewal", "pending", "alipay", orders=1, flagged=0),
        ]
        assert stats.refund_tallies(session) == [stats.RefundTally("alipay", "pending", refunds=1)]


def test_the_latest_reconciliation_runs_findings_are_counted_by_kind(engine: Engine) -> None:
    with transaction(engine) as session:
        assert stats.last_reconciliation(session) is None
    started = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    for minutes, kinds in ((0, ["overdue_order"] * 3), (5, ["open_refund", "flagged_order"])):
        report = ReconciliationReport(
            workflow_run_id=f"run-{minutes}",
            started_at=started + timedelta(minutes=minutes),
            finished_at=started + timedelta(minutes=minutes, seconds=1),
            findings=[Finding(kind=kind, order_id="o", action="a") for kind in kinds],
        )
        with transaction(engine) as session:
            reconciliation.record_run(session, report=report)
    with transaction(engine) as session:
        tally = stats.last_reconciliation(session)
    assert tally is not None
    assert tally.finished_at == started + timedelta(minutes=5, seconds=1)
    assert tally.findings == {"open_refund": 1, "flagged_order": 1}


def families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample of that name with these labels (among others)."""
    (found,) = [
        sample.value
        for sample in samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return found


async def scrape(http: httpx.AsyncClient) -> dict[str, list[Sample]]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return families(response.text)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_metrics_count_requests_callbacks_and_the_books(
    env: WorkflowEnvironment, tmp_path: Path, kind: str
) -> None:
    ensure_dev_keys(tmp_path / "keys")
    alipay_key = load_private_key(tmp_path / "keys" / "sandbox_private.pem")
    with database(kind, tmp_path) as engine:
        books(engine)
        # Several apps in one process (one per database here) keep their own registries.
        app = create_app(
            Settings(
                home=tmp_path,
                database_url=engine.url.render_as_string(hide_password=False),
                temporal_address=env.client.service_client.config.target_host,
                task_queue=f"metrics-{uuid.uuid4()}",
                api_keys=API_KEY,
            )
        )
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        async with (
            serving(app, free_port()) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            for _ in range(2):
                assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/v1/orders/ord_paid", headers=bearer)).status_code == 200
            assert (await http.get("/v1/orders/ord_unknown", headers=bearer)).status_code == 404
            assert (await http.get("/v1/orders/ord_paid")).status_code == 401
            assert (await http.get("/no/such/ord_paid")).status_code == 404
            assert (await http.request("PROPFIND", "/healthz")).status_code == 405

            async def notify(
                order_id: str, trade_no: str, key: rsa.RSAPrivateKey = alipay_key
            ) -> int:
                note = alipay_callback(key, out_trade_no=order_id, trade_no=trade_no)
                response = await http.post(
                    "/v1/callbacks/alipay", content=note.body, headers=note.headers
                )
                return response.status_code

            # Handed on: no saga runs ord_pending, so a late-payment saga is started for it.
            assert await notify("ord_pending", LATE_TRADE) == 200
            assert await notify("ord_paid", "2026112322001400000000000101") == 200
            assert await notify("ord_unknown", "2026112322001400000000000202") == 404
            forger = load_private_key(tmp_path / "keys" / "app_private.pem")
            assert await notify("ord_pending", "2026112322001400000000000203", forger) == 400

            seen = await scrape(http)
            schema = (await http.get("/openapi.json")).json()
        late = env.client.get_workflow_handle(late_payment_workflow_id(Gateway.ALIPAY, LATE_TRADE))
        await late.describe()

    assert "/metrics" not in schema["paths"]
    requests = seen["paysaga_http_requests"]
    route = "/v1/orders/{order_id}"
    count = "paysaga_http_requests_total"
    assert value(requests, count, method="GET", route="/healthz", code="200") == 2
    assert value(requests, count, method="GET", route=route, code="200") == 1
    assert value(requests, count, method="GET", route=route, code="404") == 1
    assert value(requests, count, method="GET", route=route, code="401") == 1
    assert value(requests, count, method="GET", route="unmatched", code="404") == 1
    assert value(requests, count, method="other", route="/healthz", code="405") == 1
    assert value(requests, count, method="POST", route="/v1/callbacks/{gateway}", code="200") == 2
    latency = seen["paysaga_http_request_duration_seconds"]
    healthz = {"method": "GET", "route": "/healthz"}
    assert value(latency, "paysaga_http_request_duration_seconds_count", **healthz) == 2
    assert value(latency, "paysaga_http_request_duration_seconds_bucket", le="+Inf", **healthz) == 2

    callbacks = seen["paysaga_callbacks"]
    told = {
        (sample.labels["outcome"], sample.labels["code"]): sample.value
        for sample in callbacks
        if sample.name == "paysaga_callbacks_total" and sample.labels["gateway"] == "alipay"
    }
    assert told == {
        ("payment", "200"): 1,
        ("duplicate", "200"): 1,
        ("refused", "404"): 1,
        ("refused", "400"): 1,
    }

    assert value(seen["paysaga_database_up"], "paysaga_database_up") == 1
    orders_seen, flagged = seen["paysaga_orders"], seen["paysaga_flagged_orders"]

    def books_say(kind: str, status: str, gateway: str) -> tuple[float, float]:
        labels = {"kind": kind, "status": status, "gateway": gateway}
        return (
            value(orders_seen, "paysaga_orders", **labels),
            value(flagged, "paysaga_flagged_orders", **labels),
        )

    # ord_pending is still pending: its payment is recorded, and a saga decides it.
    assert books_say("booking", "pending", "alipay") == (1, 0)
    assert books_say("booking", "paid", "alipay") == (1, 0)
    assert books_say("booking", "superseded", "alipay") == (1, 0)
    assert books_say("renewal", "pending", "alipay") == (1, 0)
    assert books_say("booking", "pending", "wechatpay") == (1, 1)
    assert books_say("booking", "expired", "alipay") == (0, 0)
    assert sum(sample.value for sample in orders_seen) == 5
    assert sum(sample.value for sample in flagged) == 1
    # Every kind, status and gateway, empty ones as 0.
    assert len(orders_seen) == len(flagged) == 2 * len(OrderStatus) * len(Gateway)
    refunds = seen["paysaga_refunds"]
    assert value(refunds, "paysaga_refunds", gateway="alipay", status="pending") == 1
    assert sum(sample.value for sample in refunds) == 1

    # No order id, raw path or key in any label: the series stay few, whoever knocks.
    labels = {v for samples in seen.values() for sample in samples for v in sample.labels.values()}
    assert not [label for label in labels if "ord_" in label or API_KEY in label]


async def test_a_scrape_while_the_database_is_cut_says_so(tmp_path: Path) -> None:
    ensure_dev_keys(tmp_path / "keys")
    with database("postgresql", tmp_path) as engine:
        url = engine.url
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        proxy.start()
        app = create_app(
            Settings(
                home=tmp_path,
                database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
                temporal_address=f"127.0.0.1:{free_port()}",
            )
        )
        async with (
            serving(app, free_port()) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
        ):
            assert value((await scrape(http))["paysaga_database_up"], "paysaga_database_up") == 1
            proxy.cut()
            seen = await scrape(http)
    assert value(seen["paysaga_database_up"], "paysaga_database_up") == 0
    assert "paysaga_orders" not in seen
    # The process's own counters are still there, the failed scrape's request among them.
    assert (
        value(seen["paysaga_http_requests"], "paysaga_http_requests_total", route="/metrics") == 1
    )


async def test_a_worker_serves_the_sdk_metrics(env: WorkflowEnvironment, tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        worker_metrics_address=f"127.0.0.1:{port}",
    )
    client = await connect_temporal(settings, runtime=worker_runtime(settings))
    task_queue = f"metrics-{uuid.uuid4()}"
    async with running_worker(client, tmp_path, task_queue) as rig:
        # In real time, with a short payment timeout: the result is read by the worker's own
        # client (only a client with its codec can), which does not make the server skip time.
        with env.auto_time_skipping_disabled():
            handle = await start_order(
                env, rig, "ord_metrics", reservation="room-metrics", payment_timeout_seconds=1
            )
            saga = client.get_workflow_handle_for(OrderWorkflow.run, handle.id)
            assert (await saga.result()).status == OrderStatus.EXPIRED
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    seen = families(response.text)
    assert all(name.startswith("temporal_") for name in seen)
    ours = {"task_queue": task_queue, "workflow_type": "OrderWorkflow"}
    assert (
        value(seen["temporal_workflow_completed"], "temporal_workflow_completed_total", **ours) == 1
    )
    activities = seen["temporal_activity_execution_latency"]
    assert {sample.labels["activity_type"] for sample in activities} >= {"close_trade"}
    # The payment is made and the reservation claimed by local activities, counted apart.
    local = seen["temporal_local_activity_execution_latency"]
    assert {sample.labels["activity_type"] for sample in local} >= {
        "create_payment",
        "claim_reservation",
    }


def test_an_empty_worker_metrics_address_serves_none_and_a_taken_one_is_refused() -> None:
    assert worker_runtime(Settings(worker_metrics_address="")).metric_meter is MetricMeter.noop
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SettingsError, match="PAYSAGA_WORKER_METRICS_ADDRESS"):
            worker_runtime(Settings(worker_metrics_address=address))
