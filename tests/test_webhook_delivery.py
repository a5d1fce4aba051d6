"""Webhooks end to end on Temporal's time-skipping test server: endpoints made through the API
over HTTP, events decided by the store's transactions, the relay and the delivery workflows on
their own task queue, and a real receiver (tests.webhook_receiver) that takes only what the
`standardwebhooks` library verifies."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from api.app import create_app
from api.problems import ApiProblem
from api.webhooks import check_endpoint_url
from core.contracts import OrderEnding, PaymentNotice, PendingDelivery, WebhookRun
from core.settings import Settings
from core.temporal import payload_codec
from core.vocabulary import EventType, Gateway, OrderStatus, webhook_workflow_id
from paysaga.dev import ensure_dev_keys
from paysaga.webhook_relay import WebhookRelay
from paysaga.worker import build_webhook_worker
from stack.ports import free_port
from store import orders
from store.db import create_db_engine, transaction
from store.schema import upgrade
from tests.orders import claim
from tests.rig import time_skipping_server
from tests.servers import serving
from tests.webhook_receiver import Receiver
from workflows.webhooks import WebhookDeliveryWorkflow

API_KEY = "psk_test_webhooks_client_key"
ADMIN_KEY = "pak_test_webhooks_operator_key"


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as environment:
        yield environment


@dataclass
class Stack:
    """The API (the business's app's door), the database, the relay and a webhook worker."""

    api: httpx.AsyncClient
    engine: Engine
    relay: WebhookRelay
    settings: Settings

    async def endpoint(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        body = {"url": url, "events": events or [str(event) for event in EventType]}
        response = await self.api.post("/v1/webhook-endpoints", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        response = await self.api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def until_deliveries(
        self, endpoint_id: str, done: Callable[[list[dict[str, Any]]], bool], seconds: float = 30
    ) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            found = await self.deliveries(endpoint_id)
            if done(found):
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the deliveries never got there: {found}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def stack(
    env: WorkflowEnvironment, home: Path, *, relaying: bool = True, **settings: Any
) -> AsyncIterator[Stack]:
    ensure_dev_keys(home / "keys")
    config = Settings(
        home=home,
        temporal_address=env.client.service_client.config.target_host,
        task_queue=f"webhooks-{uuid.uuid4()}",
        api_keys=API_KEY,
        admin_keys=ADMIN_KEY,
        webhook_retry_initial_seconds=0.1,
        webhook_relay_every_seconds=0.05,
        **settings,
    )
    upgrade(config.resolved_database_url)
    engine = create_db_engine(config.resolved_database_url, public_base_url=config.public_base_url)
    async with AsyncExitStack() as running:
        url = await running.enter_async_context(serving(create_app(config), free_port()))
        api = await running.enter_async_context(
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
            )
        )
        receivers = await running.enter_async_context(httpx.AsyncClient())
        executor = running.enter_context(ThreadPoolExecutor(max_workers=4))
        relay = WebhookRelay(env.client, engine=engine, settings=config, executor=executor)
        activities = WebhookActivities(
            engine, http=receivers, codec=payload_codec(config), executor=executor
        )
        await running.enter_async_context(
            build_webhook_worker(
                env.client,
                task_queue=config.webhook_task_queue,
                activities=activities,
                executor=executor,
            )
        )
        if relaying:
            relay_task = asyncio.create_task(relay.run())
            running.callback(relay_task.cancel)
        yield Stack(api, engine, relay, config)
    engine.dispose()


@asynccontextmanager
async def receiving(receiver: Receiver, port: int | None = None) -> AsyncIterator[str]:
    """The receiver served; yields its URL."""
    async with serving(receiver.app(), port or free_port()) as url:
        yield f"{url}/hooks"


def pay(engine: Engine, order_id: str, trade_no: str) -> None:
    now = datetime.now(UTC)
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY, order_id=order_id, trade_no=trade_no, amount_cents=2970, paid_at=now
    )
    with transaction(engine) as session:
        orders.settle_payment(session, notice=notice, now=now)


def end(
    engine: Engine, order_id: str, status: Literal[OrderStatus.EXPIRED, OrderStatus.CANCELLED]
) -> None:
    ending = OrderEnding(order_id=order_id, status=status, reason="test")
    with transaction(engine) as session:
        orders.end_order(session, ending=ending, now=datetime.now(UTC))


def story(engine: Engine) -> None:
    """Two reservations' stories: o1 superseded by o2, which is paid (so the reservation
    activated); o3 expired."""
    claim(engine, "o1")
    claim(engine, "o2")
    pay(engine, "o2", "t2")
    claim(engine, "o3", reservation="room-2")
    end(engine, "o3", OrderStatus.EXPIRED)


STORY = {
    "o1": ["order.created", "order.superseded"],
    "o2": ["order.created", "order.paid", "reservation.activated"],
    "o3": ["order.created", "order.expired"],
}


def by_order(
    deliveries: list[dict[str, Any]], events: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """The events' types, order by order, in the order they were taken."""
    order_of = {delivery["event_id"]: delivery["order_id"] for delivery in deliveries}
    told: dict[str, list[str]] = {}
    for event in events:
        told.setdefault(order_of[event["id"]], []).append(event["type"])
    return told


def all_delivered(deliveries: list[dict[str, Any]]) -> bool:
    return bool(deliveries) and all(d["status"] == "delivered" for d in deliveries)


async def test_every_event_is_delivered_verified_and_in_order_though_the_first_attempts_fail(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver(failing_attempts=2)
    async with stack(env, tmp_path) as running, receiving(receiver) as url:
        created = await running.endpoint(url)
        receiver.secret = created["secret"]
        story(running.engine)
        deliveries = await running.until_deliveries(created["id"], all_delivered)
        scraped = (await running.api.get("/metrics")).text

    assert len(deliveries) == sum(len(types) for types in STORY.values())
    assert receiver.unverified == 0
    # At least once: each event was refused twice, then taken; none lost.
    assert by_order(deliveries, receiver.taken_once()) == STORY
    for delivery in deliveries:
        assert [(a["outcome"], a["status_code"]) for a in delivery["attempts"]] == [
            ("refused", 500),
            ("refused", 500),
            ("delivered", 204),
        ]
        assert delivery["attempts"][0]["error"] == "the receiver answered 500"
    assert f'paysaga_webhook_deliveries{{status="delivered"}} {len(deliveries)}.0' in scraped
    assert f'paysaga_webhook_attempts{{outcome="refused"}} {2 * len(deliveries)}.0' in scraped
    assert 'paysaga_webhook_deliveries{status="failed"} 0.0' in scraped


async def test_a_receiver_that_was_down_gets_every_event_once_it_is_back(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver()
    port = free_port()
    async with stack(env, tmp_path) as running:
        created = await running.endpoint(f"http://127.0.0.1:{port}/hooks")
        receiver.secret = created["secret"]
        story(running.engine)
        # Nobody listens: every delivery is tried, and tried again.
        await running.until_deliveries(
            created["id"],
            lambda found: (
                len(found) == 7
                and all(
                    len(d["attempts"]) >= 2 and d["attempts"][0]["outcome"] == "unreachable"
                    for d in found
                    # Each order's first event: the later ones wait their turn.
                    if d["event_type"] == "order.created"
                )
            ),
        )
        async with receiving(receiver, port):
            deliveries = await running.until_deliveries(created["id"], all_delivered)
    assert by_order(deliveries, receiver.taken_once()) == STORY


async def test_during_a_rotation_both_secrets_sign_and_after_it_the_old_one_alone_fails(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver()
    async with stack(env, tmp_path) as running, receiving(receiver) as url:
        created = await running.endpoint(url, ["order.created", "order.cancelled"])
        first = receiver.secret = created["secret"]
        path = f"/v1/webhook-endpoints/{created['id']}/rotate-secret"
        rotated = (await running.api.post(path, json={"overlap_seconds": 3600})).json()
        second = rotated["secret"]
        assert second != first and rotated["previous_secret_expires_at"]
        claim(running.engine, "o1")
        await running.until_deliveries(created["id"], all_delivered)
        overlapping = receiver.requests[-1]
        assert overlapping.verifies_with(first) and overlapping.verifies_with(second)
        assert overlapping.headers["webhook-signature"].count("v1,") == 2

        # The receiver has moved over; the next rotation has no overlap.
        receiver.secret = second
        third = (await running.api.post(path, json={"overlap_seconds": 0})).json()["secret"]
        receiver.secret = third
        end(running.engine, "o1", OrderStatus.CANCELLED)
        await running.until_deliveries(
            created["id"], lambda found: len(found) == 2 and all_delivered(found)
        )
        after = receiver.requests[-1]
        assert after.verifies_with(third) and not after.verifies_with(second)
        assert not after.verifies_with(first)
        listed = (await running.api.get("/v1/webhook-endpoints")).json()
    assert "secret" not in listed[0]
    assert [event["type"] for event in receiver.taken_once()] == [
        "order.created",
        "order.cancelled",
    ]


async def test_410_disables_the_endpoint_and_cancels_what_it_was_still_to_get(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver(answer=410)
    async with stack(env, tmp_path) as running, receiving(receiver) as url:
        created = await running.endpoint(url)
        receiver.secret = created["secret"]
        claim(running.engine, "o1")
        end(running.engine, "o1", OrderStatus.CANCELLED)
        deliveries = await running.until_deliveries(
            created["id"],
            lambda found: len(found) == 2 and all(d["status"] != "pending" for d in found),
        )
        (listed,) = (await running.api.get("/v1/webhook-endpoints")).json()
        refused = next(d for d in deliveries if d["status"] == "failed")
        resend = await running.api.post(
            f"/v1/webhook-endpoints/{created['id']}/deliveries/{refused['delivery_id']}/resend"
        )
    assert [(d["event_type"], d["status"]) for d in deliveries] == [
        ("order.cancelled", "cancelled"),
        ("order.created", "failed"),
    ]
    # The first was answered 410; the second, still to go, was never attempted.
    assert [a["outcome"] for d in deliveries for a in d["attempts"]] == ["gone"]
    assert not listed["enabled"] and "410" in listed["disabled_reason"]
    assert resend.status_code == 409 and "disabled" in resend.json()["detail"]


async def test_a_delivery_given_up_lets_the_next_go_and_is_resent_by_the_app_or_an_operator(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver(refused_types={"order.created"})
    async with (
        stack(env, tmp_path, webhook_give_up_seconds=1) as running,
        receiving(receiver) as url,
    ):
        created = await running.endpoint(url, ["order.created", "order.cancelled"])
        receiver.secret = created["secret"]
        claim(running.engine, "o1")
        claim(running.engine, "o2", reservation="room-2")
        end(running.engine, "o1", OrderStatus.CANCELLED)
        ended = await running.until_deliveries(
            created["id"],
            lambda found: len(found) == 3 and all(d["status"] != "pending" for d in found),
        )
        statuses = {(d["order_id"], d["event_type"]): d["status"] for d in ended}
        assert statuses == {
            ("o1", "order.created"): "failed",
            ("o2", "order.created"): "failed",
            # Its order's earlier event was given up: this one went in its turn.
            ("o1", "order.cancelled"): "delivered",
        }
        assert all(d["finished_at"] for d in ended)

        receiver.refused_types.clear()
        first, second = (d for d in ended if d["event_type"] == "order.created")
        by_app = await running.api.post(
            f"/v1/webhook-endpoints/{created['id']}/deliveries/{first['delivery_id']}/resend"
        )
        assert by_app.status_code == 202 and by_app.json()["status"] == "pending"
        door = f"/v1/admin/webhook-deliveries/{second['delivery_id']}/resend"
        refused = await running.api.post(door)
        assert refused.status_code == 401  # a client's key opens no operator's door
        by_operator = await running.api.post(door, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert by_operator.status_code == 202, by_operator.text
        again = await running.until_deliveries(created["id"], all_delivered)
        unknown = await running.api.post(
            f"/v1/webhook-endpoints/{created['id']}/deliveries/dlv_nobody/resend"
        )
    assert unknown.status_code == 404
    resent = [d for d in again if d["event_type"] == "order.created"]
    assert all(d["attempts"][-1]["outcome"] == "delivered" for d in resent)
    # The same event, id and body, as the first time.
    assert sorted(e["id"] for e in receiver.taken_once() if e["type"] == "order.created") == sorted(
        d["event_id"] for d in resent
    )


async def test_a_delivery_workflow_about_to_end_idle_takes_a_delivery_handed_over_meanwhile(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The race: the workflow asked for the next delivery, found none, and is about to end,
    when a delivery is decided and the relay signals it. The real `next_delivery` activity is
    wrapped to make exactly that happen, once, between its read and its answer."""
    receiver = Receiver()
    async with stack(env, tmp_path, relaying=False) as running, receiving(receiver) as url:
        created = await running.endpoint(url, ["order.created", "order.cancelled"])
        receiver.secret = created["secret"]
        claim(running.engine, "o1")
        raced = asyncio.Event()
        # A relay and workflows of their own, on a task queue of their own.
        racing = running.settings.model_copy(update={"task_queue": f"racing-{uuid.uuid4()}"})
        async with httpx.AsyncClient() as http:
            with ThreadPoolExecutor(max_workers=2) as executor:
                relay = WebhookRelay(
                    env.client, engine=running.engine, settings=racing, executor=executor
                )
                real = WebhookActivities(
                    running.engine,
                    http=http,
                    codec=payload_codec(racing),
                    executor=executor,
                )

                @activity.defn(name="next_delivery")
                async def next_delivery_racing(run: WebhookRun) -> PendingDelivery | None:
                    found = await asyncio.to_thread(real.next_delivery, run)
                    if found is None and not raced.is_set():
                        raced.set()
                        end(running.engine, "o1", OrderStatus.CANCELLED)
                        assert await relay.relay_once() == 1
                    return found

                async with Worker(
                    env.client,
                    task_queue=racing.webhook_task_queue,
                    workflows=[WebhookDeliveryWorkflow],
                    activities=[next_delivery_racing, real.deliver, real.give_up],
                    activity_executor=executor,
                ):
                    assert await relay.relay_once() == 1
                    handle = env.client.get_workflow_handle(
                        webhook_workflow_id(created["id"], "o1")
                    )
                    await handle.result()
        deliveries = await running.deliveries(created["id"])
    assert raced.is_set()
    assert [(d["event_type"], d["status"]) for d in deliveries] == [
        ("order.cancelled", "delivered"),
        ("order.created", "delivered"),
    ]
    assert [e["type"] for e in receiver.taken_once()] == ["order.created", "order.cancelled"]


async def test_the_api_checks_endpoints_and_shows_each_secret_once(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with stack(env, tmp_path, relaying=False) as running:
        created = await running.endpoint("https://shop.example.com/hooks", ["order.paid"])
        refusals = {
            "ftp": {"url": "ftp://shop.example.com/hooks", "events": ["order.paid"]},
            "http elsewhere": {"url": "http://shop.example.com/hooks", "events": ["order.paid"]},
            "credentials": {"url": "https://u:p@shop.example.com/", "events": ["order.paid"]},
            "NUL": {"url": "https://shop.example.com/\x00", "events": ["order.paid"]},
            "no events": {"url": "https://shop.example.com/hooks", "events": []},
            "unknown event": {"url": "https://shop.example.com/hooks", "events": ["order.lost"]},
        }
        answers = {
            name: await running.api.post("/v1/webhook-endpoints", json=body)
            for name, body in refusals.items()
        }
        for loopback in ("127.0.0.1", "[::1]", "localhost"):
            body = {"url": f"http://{loopback}:9/hooks", "events": ["order.paid"]}
            assert (await running.api.post("/v1/webhook-endpoints", json=body)).status_code == 201
        listed = (await running.api.get("/v1/webhook-endpoints")).json()
        path = f"/v1/webhook-endpoints/{created['id']}"
        disabled = await running.api.post(f"{path}/disable")
        rotated = await running.api.post(f"{path}/rotate-secret")
        unknown = await running.api.get("/v1/webhook-endpoints/we_nobody/deliveries")
        stranger = await running.api.get(
            "/v1/webhook-endpoints", headers={"Authorization": "Bearer wrong"}
        )
        other_method = await running.api.delete("/v1/webhook-endpoints")
    assert created["id"].startswith("we_") and created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) >= 24
    assert created["events"] == ["order.paid"] and created["enabled"]
    for name, answer in answers.items():
        assert answer.status_code == 422, (name, answer.text)
    assert "https" in answers["http elsewhere"].json()["detail"]
    assert "credentials" in answers["credentials"].json()["detail"]
    assert "'reservation.extended'" in answers["unknown event"].json()["detail"]
    assert len(listed) == 4 and all("secret" not in endpoint for endpoint in listed)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled by the client"
    assert rotated.status_code == 200 and rotated.json()["secret"] != created["secret"]
    assert unknown.status_code == 404 and stranger.status_code == 401
    # Both of the path's methods, though each is a route of its own.
    assert other_method.status_code == 405
    assert {"GET", "POST"} <= set(other_method.headers["Allow"].split(", "))


def test_production_takes_https_endpoints_only() -> None:
    check_endpoint_url("https://shop.example.com/hooks", production=True)
    for url in ("http://127.0.0.1:8080/hooks", "http://localhost/hooks", "https://[::1/hooks"):
        with pytest.raises(ApiProblem) as refused:
            check_endpoint_url(url, production=True)
        assert refused.value.status_code == 422
        assert "https" in refused.value.detail
