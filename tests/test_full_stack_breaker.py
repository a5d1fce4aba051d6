"""A gateway that stops answering, seen through the whole system: the Temporal dev server, the
sandbox, two workers and three APIs on one database, over real HTTP.

Orders on the failing gateway first wait out their creation deadline; once a worker's breaker
opens, every API refuses them at once, naming the gateway, while the other gateway still takes
orders; when the gateway answers again, a probe closes the breaker."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from core.vocabulary import Gateway
from stack.system import API_KEY, System, running_system
from tests.databases import database_url
from tests.rig import Sandbox

pytestmark = pytest.mark.slow
DATABASE_KIND = os.environ.get("PAYSAGA_TEST_DATABASE", "sqlite")
# stack.system gives each order 8 s to get its QR code: a refusal by the breaker comes well
# before that.
FAST_SECONDS = 1.0
# How often a worker asks a gateway whose breaker is open (the default setting).
PROBE_SECONDS = 5
# Enough orders at once that a worker sees the breaker's minimum of calls within its window.
BATCH = 10


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    home = tmp_path_factory.mktemp("system")
    with database_url(DATABASE_KIND, home) as url, running_system(home, url) as running:
        yield running


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as h:
        yield h


def all_apis(system: System) -> list[str]:
    return [*system.api_urls, system.short_timeout_api_url]


async def create(http: httpx.AsyncClient, api_url: str, gateway: Gateway) -> httpx.Response:
    body = {"reservation_id": f"res-{uuid.uuid4().hex[:12]}", "days": 1, "gateway": gateway}
    return await http.post(f"{api_url}/v1/orders", json=body)


async def readiness(http: httpx.AsyncClient, api_url: str) -> dict[str, Any]:
    response = await http.get(f"{api_url}/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def timed_create(
    http: httpx.AsyncClient, api_url: str, gateway: Gateway
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await create(http, api_url, gateway)
    return response, time.monotonic() - started


async def test_a_failing_gateway_fails_fast_until_a_probe_gets_through(
    system: System, http: httpx.AsyncClient
) -> None:
    sandbox = Sandbox(http, system.sandbox_url)
    apis = all_apis(system)
    await sandbox.faults(
        fail_methods={"wechatpay.native": 100_000, "wechatpay.query": 100_000},
        fail_mode="http_503",
    )
    try:
        # Before the breaker opens, each order waits out its creation deadline.
        for _ in range(6):
            batch = await asyncio.gather(
                *(create(http, apis[n % 2], Gateway.WECHATPAY) for n in range(BATCH))
            )
            assert {response.status_code for response in batch} == {503}
            if (await readiness(http, apis[2]))["gateways"]["wechatpay"]["breaker"] == "open":
                break
        ready = await readiness(http, apis[2])
        assert ready["status"] == "ready" and ready["database"] == ready["temporal"] == "ok"
        opened = ready["gateways"]["wechatpay"]
        assert opened["breaker"] == "open" and opened["since"] is not None
        assert "calls failed within 5 s" in opened["reason"]
        assert ready["gateways"]["alipay"]["breaker"] == "closed"

        # Every API refuses the gateway's new orders at once, naming it; others still go.
        for api_url in apis:
            response, seconds = await timed_create(http, api_url, Gateway.WECHATPAY)
            # An API may hold its previous reading of the breakers for up to a second.
            deadline = time.monotonic() + 5
            while "is failing" not in response.text and time.monotonic() < deadline:
                response, seconds = await timed_create(http, api_url, Gateway.WECHATPAY)
            assert response.status_code == 503, response.text
            detail = response.json()["detail"]
            assert detail.startswith("wechatpay is failing: ") and "no order was created" in detail
            assert seconds < FAST_SECONDS
        paid_elsewhere = await create(http, apis[0], Gateway.ALIPAY)
        assert paid_elsewhere.status_code == 201, paid_elsewhere.text

        # WeChat Pay answers again: a probe (every 5 s) closes the breaker for every API.
        (await http.delete(f"{system.sandbox_url}/sandbox/faults")).raise_for_status()
        deadline = time.monotonic() + 20
        while (await readiness(http, apis[1]))["gateways"]["wechatpay"]["breaker"] == "open":
            assert time.monotonic() < deadline, "no probe closed the breaker"
            await asyncio.sleep(0.2)
        closed = (await readiness(http, apis[1]))["gateways"]["wechatpay"]
        assert closed["breaker"] == "closed" and closed["reason"] == "a call got through"
        # The first probe through closes the recorded breaker; each worker's own breaker
        # closes at its own probe, within one probe interval, and each API holds its reading
        # for up to a second: until then an order may still be refused.
        for api_url in apis:
            deadline = time.monotonic() + PROBE_SECONDS + 2
            response = await create(http, api_url, Gateway.WECHATPAY)
            while response.status_code == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                response = await create(http, api_url, Gateway.WECHATPAY)
            assert response.status_code == 201, response.text
            assert response.json()["gateway"] == "wechatpay"
    finally:
        (await http.delete(f"{system.sandbox_url}/sandbox/faults")).raise_for_status()
