"""A worker wired to real things: a SQLite database, and the sandbox gateway over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.orders import OrderActivities
from activities.payments import PaymentActivities
from core.settings import Settings
from gateways.registry import payment_gateways
from paysaga.dev import ensure_dev_keys
from paysaga.temporal_server import installed_binary, register_search_attributes
from paysaga.worker import build_worker
from sandbox.app import create_app as create_sandbox_app
from sandbox.settings import SandboxSettings
from stack.ports import free_port
from store.db import create_db_engine
from store.schema import upgrade
from tests.servers import serving


def sandbox_settings(keys: Path, port: int) -> SandboxSettings:
    return SandboxSettings(
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        app_public_key_file=keys / "app_public.pem",
        private_key_file=keys / "sandbox_private.pem",
        public_key_file=keys / "sandbox_public.pem",
        wechatpay_merchant_public_key_file=keys / "wechatpay_merchant_public.pem",
        wechatpay_private_key_file=keys / "wechatpay_platform_private.pem",
        wechatpay_public_key_file=keys / "wechatpay_platform_public.pem",
        wechatpay_apiv3_key_file=keys / "wechatpay_apiv3.key",
        notify_retry_scale=0.0001,
    )


@dataclass
class Sandbox:
    """The test's hands on the sandbox: the buyer's actions and the gateway's books."""

    http: httpx.AsyncClient
    url: str

    async def scan(self, out_trade_no: str) -> dict[str, Any]:
        return await self._post(f"/sandbox/trades/{out_trade_no}/scan")

    async def pay(self, out_trade_no: str) -> dict[str, Any]:
        return await self._post(f"/sandbox/trades/{out_trade_no}/pay")

    async def finish(self, out_trade_no: str) -> dict[str, Any]:
        return await self._post(f"/sandbox/trades/{out_trade_no}/finish")

    async def delivered(self, out_trade_no: str) -> bool:
        """Every notification of the trade has been answered `success`."""
        notifications = (await self.trade(out_trade_no))["notifications"]
        return bool(notifications) and all(note["delivered"] for note in notifications)

    async def knows(self, out_trade_no: str) -> bool:
        """Whether the gateway has a trade of this number at all."""
        response = await self.http.get(f"{self.url}/sandbox/trades/{out_trade_no}")
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    async def trade(self, out_trade_no: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.url}/sandbox/trades/{out_trade_no}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def armed_faults(self) -> dict[str, Any]:
        """The faults still to fire: counters count down as they do."""
        response = await self.http.get(f"{self.url}/sandbox/faults")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def faults(self, **faults: Any) -> None:
        (await self.http.put(f"{self.url}/sandbox/faults", json=faults)).raise_for_status()

    async def net_captured(self, out_trade_nos: list[str]) -> Decimal:
        """Captured minus refunded, by the gateway's books, over these trades."""
        response = await self.http.get(f"{self.url}/sandbox/ledger")
        response.raise_for_status()
        lines = [
            line for line in response.json()["trades"] if line["out_trade_no"] in out_trade_nos
        ]
        return sum(
            (Decimal(line["captured"]) - Decimal(line["refunded"]) for line in lines), Decimal(0)
        )

    async def _post(self, path: str) -> dict[str, Any]:
        response = await self.http.post(self.url + path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@dataclass
class Rig:
    engine: Engine
    sandbox: Sandbox
    task_queue: str


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, with paysaga's search attributes."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(environment.client)
    try:
        yield environment
    finally:
        await environment.shutdown()


@asynccontextmanager
async def running_worker(
    client: Client, tmp_path: Path, task_queue: str, *, database_url: str | None = None
) -> AsyncIterator[Rig]:
    """A worker and the sandbox; on a SQLite file in `tmp_path` unless `database_url` says."""
    keys = tmp_path / "keys"
    ensure_dev_keys(keys)
    port = free_port()
    async with serving(create_sandbox_app(sandbox_settings(keys, port)), port) as sandbox_url:
        settings = Settings(
            home=tmp_path,
            database_url=database_url,
            sandbox_url=sandbox_url,
            # Nobody listens there: these tests hand payments to the saga themselves.
            public_base_url=f"http://127.0.0.1:{free_port()}",
        )
        upgrade(settings.resolved_database_url)
        engine = create_db_engine(
            settings.resolved_database_url, public_base_url=settings.public_base_url
        )
        async with httpx.AsyncClient(timeout=10) as http:
            with ThreadPoolExecutor(max_workers=4) as executor:
                worker = build_worker(
                    client,
                    task_queue=task_queue,
                    order_activities=OrderActivities(engine),
                    payment_activities=PaymentActivities(payment_gateways(settings, http)),
                    executor=executor,
                )
                async with worker:
                    yield Rig(engine, Sandbox(http, sandbox_url), task_queue)
        engine.dispose()
