"""`POST /v1/orders` keeps its promise — a 503 means that no order was made, nor ever will be —
where the chaos drill (`make chaos`) found it broken, and a cancel or a Pay carried out as the
database falls away says so: a real worker and the sandbox on PostgreSQL, the API reaching the
same database through a relay that can be cut."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.settings import Settings
from core.temporal import connect_temporal
from paysaga.dev import ensure_dev_keys
from stack.ports import free_port
from stack.tcp_proxy import TcpProxy
from store import breakers, orders
from store.db import create_db_engine, transaction
from store.models import Reservation
from store.schema import upgrade
from tests.databases import database_url
from tests.rig import Rig, running_worker, time_skipping_server
from tests.servers import serving

API_KEY = "psk_test_order_creation"
PRECREATE = "alipay.trade.precreate"
CLOSE = "alipay.trade.close"


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as environment:
        yield environment


@dataclass
class Shop:
    http: httpx.AsyncClient
    rig: Rig
    # The API's way to the database, and the database itself, as the worker reaches it.
    relay: TcpProxy
    engine: Engine

    async def post(
        self, key: str, *, idempotent: bool = True, payment: str = "immediate"
    ) -> httpx.Response:
        body = {"reservation_id": f"room-{key}", "days": 1, "gateway": "alipay", "payment": payment}
        headers = {"Idempotency-Key": key} if idempotent else {}
        return await self.http.post("/v1/orders", json=body, headers=headers)

    async def posted_across_outage(self, path: str, *, failing: str) -> httpx.Response:
        """POST `path`, whose saga's first call of `failing` at the gateway fails: the API loses
        the database while the saga tries again, and has it back once it has answered."""
        await self.rig.sandbox.faults(fail_methods={failing: 1})
        posting = asyncio.create_task(self.http.post(path))
        await self.until_failed(failing)
        self.relay.cut()
        try:
            return await posting
        finally:
            self.relay.start()

    async def until_failed(self, method: str) -> None:
        """Once the sandbox has failed a call of `method`: the saga will ask again later."""
        url = f"{self.rig.sandbox.url}/sandbox/faults/fired"
        for _ in range(500):
            if (await self.rig.sandbox.http.get(url)).json()["gateway_calls_failed"].get(method):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{method} never failed")

    def reservation(self, key: str) -> Reservation | None:
        with transaction(self.engine) as session:
            return orders.get_reservation(session, f"room-{key}")


@asynccontextmanager
async def shop(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Shop]:
    ensure_dev_keys(tmp_path / "keys")
    task_queue = f"creation-{uuid.uuid4()}"
    target = env.client.service_client.config.target_host
    # The API's client encrypts payloads: the worker's must read them.
    client = await connect_temporal(Settings(home=tmp_path, temporal_address=target))
    with database_url("postgresql", tmp_path) as url:
        upgrade(url)
        parsed = make_url(url)
        relay = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        relay.start()
        engine = create_db_engine(url)
        async with running_worker(client, tmp_path, task_queue, database_url=url) as rig:
            settings = Settings(
                home=tmp_path,
                database_url=parsed.set(port=relay.port).render_as_string(hide_password=False),
                temporal_address=target,
                task_queue=task_queue,
                api_keys=API_KEY,
                sandbox_url=rig.sandbox.url,
            )
            async with (
                serving(create_app(settings), free_port()) as base,
                httpx.AsyncClient(
                    base_url=base, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}
                ) as http,
            ):
                yield Shop(http, rig, relay, engine)
        relay.cut()
        engine.dispose()


async def test_an_order_made_as_the_database_falls_away_is_answered_504_then_itself(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with shop(env, tmp_path) as our:
        # The gateway's first answer is a system error: the saga asks again a second later, and
        # the database is cut off from the API meanwhile.
        await our.rig.sandbox.faults(fail_methods={PRECREATE: 1})
        posted = asyncio.create_task(our.post("outage"))
        await our.until_failed(PRECREATE)
        our.relay.cut()
        outage = await posted
        # Asked again during the outage, the API cannot read the key's order either.
        still_out = await our.post("outage")
        # Without a key the same request again would make another order: not what to do.
        keyless = await our.post("outage", idempotent=False)
        our.relay.start()
        again = await our.post("outage")
        made = our.reservation("outage")

    # The saga made the order: the API cannot say so, and must not say that it did not.
    assert outage.status_code == still_out.status_code == 504, (outage.text, still_out.text)
    assert "same Idempotency-Key" in outage.json()["detail"]
    assert keyless.status_code == 504, keyless.text
    assert "GET /v1/reservations/" in keyless.json()["detail"]
    assert "same Idempotency-Key" not in keyless.json()["detail"]
    assert made is not None and made.payable_order_id is not None
    assert again.status_code == 201, again.text
    assert again.json()["order_id"] == made.payable_order_id


async def test_a_breakers_refusal_is_the_one_verdict_on_an_order_being_made_meanwhile(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with shop(env, tmp_path) as our:
        # The first request's saga takes seconds to get its QR code; the gateway's breaker
        # opens meanwhile, and the same request again (another tab, say) is refused by it.
        await our.rig.sandbox.faults(fail_methods={PRECREATE: 3})
        first = asyncio.create_task(our.post("twice"))
        await our.until_failed(PRECREATE)
        with transaction(our.engine) as session:
            breakers.record_breaker(
                session, gateway="alipay", is_open=True, reason="failing", now=datetime.now(UTC)
            )
        await asyncio.sleep(1.1)  # past the API's cached read of the breakers
        second = await our.post("twice")
        answers = [await first, second]
        made = our.reservation("twice")

    # Both answers say the same: no order was made, nor ever will be.
    assert [answer.status_code for answer in answers] == [503, 503], [a.text for a in answers]
    assert "alipay is failing" in second.json()["detail"]
    assert made is None or made.payable_order_id is None


async def test_a_cancel_done_as_the_database_falls_away_says_it_was_done(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with shop(env, tmp_path) as our:
        made = await our.post("cancelled")
        order = f"/v1/orders/{made.json()['order_id']}"
        # The API cannot read the cancelled order back.
        cancelled = await our.posted_across_outage(f"{order}/cancel", failing=CLOSE)
        shown = await our.http.get(order)

    assert made.status_code == 201, made.text
    assert cancelled.status_code == 503, cancelled.text
    assert cancelled.json()["detail"].startswith("the order ended cancelled, but the database")
    assert shown.json()["status"] == "cancelled"


async def test_a_payment_made_as_the_database_falls_away_says_it_was_made(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with shop(env, tmp_path) as our:
        quoted = await our.post("pay", payment="deferred")
        order = f"/v1/orders/{quoted.json()['order_id']}"
        # The API cannot read the order with its trade back.
        paid = await our.posted_across_outage(f"{order}/payment", failing=PRECREATE)
        again = await our.http.post(f"{order}/payment")

    assert quoted.status_code == 201, quoted.text
    assert paid.status_code == 503, paid.text
    assert paid.json()["detail"].startswith("the order's payment is made")
    assert again.status_code == 200, again.text
    assert again.json()["qr_code"] is not None
