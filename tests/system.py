"""The whole system as separate processes, as `paysaga dev` runs it, on free loopback ports.

The Temporal dev server, the sandbox gateway, two workers and three API processes share one
database. Two APIs take orders with a long payment timeout, the third with a short one. The
slow tests run it on the database PAYSAGA_TEST_DATABASE names (sqlite or postgresql); `Shop`
is the business's app calling its APIs.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine.url import make_url
from temporalio.client import Client

from core.settings import Settings
from core.temporal import connect_temporal
from core.vocabulary import Gateway
from paysaga.dev import (
    Supervisor,
    ensure_dev_keys,
    prepare_database,
    sandbox_env,
    wait_for_port,
)
from paysaga.temporal_server import dev_server_command
from tests.notifications import Callback
from tests.servers import free_port
from tests.tcp_proxy import TcpProxy

DATABASE_KIND = os.environ.get("PAYSAGA_TEST_DATABASE", "sqlite")
API_KEY = "psk_test_full_stack"
ADMIN_KEY = "pak_test_full_stack_operators"
TASK_QUEUE = "paysaga-full-stack"
SHORT_TIMEOUT_SECONDS = 4
LONG_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class System:
    temporal_address: str
    sandbox_url: str
    api_urls: tuple[str, str]  # long payment timeout
    short_timeout_api_url: str
    database_url: str
    keys_dir: Path
    logs: Path
    supervisor: Supervisor
    worker_env: tuple[dict[str, str], ...]
    temporal_command: list[str]
    database_proxy: TcpProxy | None  # PostgreSQL only: the way to cut the database off

    async def temporal_client(self) -> Client:
        """A Temporal client as our processes have it: with their payload encryption key."""
        settings = Settings(home=self.keys_dir.parent, temporal_address=self.temporal_address)
        return await connect_temporal(settings)

    def kill_workers(self) -> None:
        """As a crash would: SIGKILL, no goodbye to Temporal."""
        for n in range(len(self.worker_env)):
            process = self.supervisor.children[f"worker-{n}"]
            process.kill()
            process.wait()

    def start_workers(self) -> None:
        for n, env in enumerate(self.worker_env):
            self.supervisor.start_paysaga("worker", name=f"worker-{n}", **env)

    def kill_temporal(self) -> None:
        process = self.supervisor.children["temporal"]
        process.kill()
        process.wait()

    def start_temporal(self) -> None:
        """The same server on the same port and state file: what a restart after a crash is."""
        self.supervisor.start("temporal", self.temporal_command)
        host, _, port = self.temporal_address.rpartition(":")
        wait_for_port(host, int(port), supervisor=self.supervisor, name="Temporal")


@contextmanager
def running_system(home: Path, database_url: str) -> Iterator[System]:
    ensure_dev_keys(home / "keys")
    prepare_database(database_url)
    database_proxy = None
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        database_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        database_proxy.start()
        database_url = url.set(port=database_proxy.port).render_as_string(hide_password=False)
    temporal_port, sandbox_port = free_port(), free_port()
    api_ports = [free_port() for _ in range(3)]
    temporal_address = f"127.0.0.1:{temporal_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
    base_env = {
        **os.environ,
        "PAYSAGA_HOME": str(home),
        "PAYSAGA_DATABASE_URL": database_url,
        "PAYSAGA_TEMPORAL_ADDRESS": temporal_address,
        "PAYSAGA_TASK_QUEUE": TASK_QUEUE,
        "PAYSAGA_API_KEYS": API_KEY,
        "PAYSAGA_ADMIN_KEYS": ADMIN_KEY,
        "PAYSAGA_SANDBOX_URL": sandbox_url,
        "PAYSAGA_PAYMENT_CREATE_TIMEOUT_SECONDS": "3",
        # The scenarios poll orders often; the budget itself is tested elsewhere.
        "PAYSAGA_RATE_LIMIT_REQUESTS": "1000000",
        # Webhooks handed over and tried again within the scenarios' patience.
        "PAYSAGA_WEBHOOK_RELAY_EVERY_SECONDS": "0.2",
        "PAYSAGA_WEBHOOK_RETRY_INITIAL_SECONDS": "0.5",
    }
    supervisor = Supervisor(env=base_env, log_dir=home / "logs")
    settings = Settings(home=home, sandbox_url=sandbox_url)
    try:
        # A state file, so that Temporal can crash and come back as it would in production.
        temporal_command = dev_server_command(
            port=temporal_port, ui_port=None, db_file=home / "temporal.db"
        )
        supervisor.start("temporal", temporal_command)
        supervisor.start_paysaga(
            "sandbox", **sandbox_env(settings), PAYSAGA_SANDBOX_NOTIFY_RETRY_SCALE="0.001"
        )
        wait_for_port("127.0.0.1", temporal_port, supervisor=supervisor, name="Temporal")
        wait_for_port("127.0.0.1", sandbox_port, supervisor=supervisor, name="the sandbox")
        # Each worker builds notify_url from its own API, so notifications reach both; each
        # serves its SDK metrics on a port of its own.
        worker_env = tuple(
            {
                "PAYSAGA_PUBLIC_BASE_URL": api_url,
                "PAYSAGA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            }
            for api_url in api_urls[:2]
        )
        for n, env in enumerate(worker_env):
            supervisor.start_paysaga("worker", name=f"worker-{n}", **env)
        for n, port in enumerate(api_ports):
            timeout = SHORT_TIMEOUT_SECONDS if n == 2 else LONG_TIMEOUT_SECONDS
            supervisor.start_paysaga(
                "api",
                name=f"api-{n}",
                PAYSAGA_API_PORT=str(port),
                PAYSAGA_PUBLIC_BASE_URL=api_urls[n],
                PAYSAGA_PAYMENT_TIMEOUT_SECONDS=str(timeout),
                # Orders taken by the short-timeout API stop watching for late payments soon
                # after their deadline, so that both ways a late payment is refunded (by the
                # order's saga while it watches, by a late-payment saga after) are exercised.
                PAYSAGA_LATE_PAYMENT_HORIZON_SECONDS=str(timeout if n == 2 else 90000),
            )
        for port in api_ports:
            wait_for_port("127.0.0.1", port, supervisor=supervisor, name="an API")
        yield System(
            temporal_address=temporal_address,
            sandbox_url=sandbox_url,
            api_urls=(api_urls[0], api_urls[1]),
            short_timeout_api_url=api_urls[2],
            database_url=database_url,
            keys_dir=home / "keys",
            logs=home / "logs",
            supervisor=supervisor,
            worker_env=worker_env,
            temporal_command=temporal_command,
            database_proxy=database_proxy,
        )
    finally:
        supervisor.stop()
        if database_proxy is not None:
            database_proxy.cut()


@dataclass
class Shop:
    """The business's app: it calls paysaga's API."""

    http: httpx.AsyncClient
    system: System

    async def create(
        self,
        reservation: str,
        days: int = 3,
        *,
        api: int = 0,
        api_url: str | None = None,
        gateway: Gateway | None = None,
        **extra: Any,
    ) -> httpx.Response:
        url = api_url or self._api(api)
        headers = (
            {"Idempotency-Key": extra.pop("idempotency_key")} if "idempotency_key" in extra else {}
        )
        if gateway is not None:
            extra["gateway"] = gateway
        return await self.http.post(
            f"{url}/v1/orders",
            json={"reservation_id": reservation, "days": days, **extra},
            headers=headers,
        )

    async def order(
        self, reservation: str, days: int = 3, *, api: int = 0, gateway: Gateway | None = None
    ) -> dict[str, Any]:
        response = await self.create(reservation, days, api=api, gateway=gateway)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def notify(self, api_url: str, gateway: Gateway, callback: Callback) -> httpx.Response:
        """Deliver a notification to an API's callback door, as the gateway would."""
        return await self.http.post(
            f"{api_url}/v1/callbacks/{gateway}", content=callback.body, headers=callback.headers
        )

    async def get(self, path: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.system.api_urls[0]}{path}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settled(self, order_id: str, *statuses: str, seconds: float = 30) -> dict[str, Any]:
        """The order once it has one of these statuses and no money of it is still moving."""
        return await self.until(
            order_id,
            lambda order: (
                order["status"] in statuses
                and all(refund["status"] != "pending" for refund in order["refunds"])
                and all(
                    payment["status"] not in ("received", "refunding")
                    for payment in order["payments"]
                )
            ),
            seconds=seconds,
        )

    async def until(
        self, order_id: str, done: Callable[[dict[str, Any]], bool], *, seconds: float = 30
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            order = await self.get(f"/v1/orders/{order_id}")
            if done(order):
                return order
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"order never got there: {json.dumps(order, indent=1)}")
            await asyncio.sleep(0.1)

    def _api(self, n: int) -> str:
        return self.system.short_timeout_api_url if n == 2 else self.system.api_urls[n]
