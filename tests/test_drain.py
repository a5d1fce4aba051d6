"""SIGTERM drains: `paysaga api` and `paysaga worker`, each a real process, stop taking work,
finish the request or activity in hand with its normal result, and exit 0. Their logs, in
JSON, hold one object per line and no key."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from api.timeline import LOCAL_ACTIVITY_MARKER
from core.contracts import OrderRequest
from core.settings import Settings
from core.temporal import connect_temporal
from core.vocabulary import Gateway, order_workflow_id
from gateways.alipay_signing import load_private_key
from paysaga.dev import Supervisor, ensure_dev_keys, port_in_use, prepare_database, wait_for_port
from paysaga.temporal_server import dev_server_command
from sandbox.app import create_app as create_sandbox_app
from stack.notifications import alipay_callback
from stack.ports import free_port
from store.db import create_db_engine, transaction
from store.models import CallbackAttempt
from tests.orders import claim
from tests.rig import sandbox_settings
from tests.servers import serving
from workflows.order import OrderWorkflow

API_KEY = "psk_test_drain_client"
ORDER = "ord_drain"
# Far longer than a drain may take: a process still running then has hung.
EXIT_SECONDS = 20


@asynccontextmanager
async def processes(home: Path, **env: str) -> AsyncIterator[Supervisor]:
    """Our processes on this home, in JSON logs; whatever still runs is stopped at the end."""
    ensure_dev_keys(home / "keys")
    database_url = f"sqlite:///{home / 'paysaga.db'}"
    prepare_database(database_url)
    supervisor = Supervisor(
        env={
            **os.environ,
            "PAYSAGA_HOME": str(home),
            "PAYSAGA_DATABASE_URL": database_url,
            "PAYSAGA_API_KEYS": API_KEY,
            "PAYSAGA_LOG_FORMAT": "json",
            **env,
        },
        log_dir=home / "logs",
    )
    try:
        yield supervisor
    finally:
        await asyncio.to_thread(supervisor.stop)


async def exit_status(process: subprocess.Popen[bytes]) -> int:
    return await asyncio.to_thread(process.wait, EXIT_SECONDS)


async def until_closed(port: int) -> None:
    deadline = time.monotonic() + EXIT_SECONDS
    while port_in_use("127.0.0.1", port):
        assert time.monotonic() < deadline, f"port {port} still taken {EXIT_SECONDS} s on"
        await asyncio.sleep(0.05)


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Each line of the log, which must be one JSON object with the fields every line has."""
    text = log.read_text()
    assert API_KEY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    return lines


async def test_the_api_answers_the_request_in_flight_then_exits_0(tmp_path: Path) -> None:
    port = free_port()
    async with processes(
        tmp_path,
        PAYSAGA_API_PORT=str(port),
        # Nobody listens there: what is drained here needs only the database.
        PAYSAGA_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
    ) as supervisor:
        engine = create_db_engine(f"sqlite:///{tmp_path / 'paysaga.db'}")
        claim(engine, ORDER)
        supervisor.start_paysaga("api")
        await asyncio.to_thread(
            wait_for_port, "127.0.0.1", port, supervisor=supervisor, name="the API"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            bearer = {"Authorization": f"Bearer {API_KEY}"}
            assert (await http.get(f"/v1/orders/{ORDER}", headers=bearer)).status_code == 200

        # A notification that its trade awaits payment: recorded, and answered `success`.
        alipay = load_private_key(tmp_path / "keys" / "sandbox_private.pem")
        note = alipay_callback(alipay, out_trade_no=ORDER, trade_status="WAIT_BUYER_PAY")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        headers = {
            **note.headers,
            "Host": f"127.0.0.1:{port}",
            "Content-Length": str(len(note.body)),
            # The server says "100 Continue" once the app asks for the body: it is in flight.
            "Expect": "100-continue",
        }
        head = "POST /v1/callbacks/alipay HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        writer.write(head.encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"

        api = supervisor.children["api"]
        api.send_signal(signal.SIGTERM)
        # It takes no new connection, but is still there for the one in flight.
        await until_closed(port)
        assert api.poll() is None
        writer.write(note.body)
        answer = await reader.read()
        writer.close()

        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nsuccess")
        assert await exit_status(api) == 0
    with transaction(engine) as session:
        (attempt,) = session.exec(select(CallbackAttempt)).all()
    engine.dispose()
    assert (attempt.out_trade_no, attempt.outcome) == (ORDER, "other")

    lines = json_lines(tmp_path / "logs" / "api.log")
    said = [(line["logger"], line["message"]) for line in lines]
    (answered,) = [
        n
        for n, (logger, message) in enumerate(said)
        if logger == "uvicorn.access" and '"POST /v1/callbacks/alipay HTTP/1.1" 200' in message
    ]
    assert said.index(("uvicorn.error", "Shutting down")) < answered


class SlowGateway:
    """A TCP relay to the sandbox that holds every connection until released: a gateway slow
    to answer."""

    def __init__(self, target_port: int) -> None:
        self.connected = asyncio.Event()
        self.released = asyncio.Event()
        self._target_port = target_port
        self._pumps: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            for pump in self._pumps:
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        self.connected.set()
        await self.released.wait()
        upstream, to_upstream = await asyncio.open_connection("127.0.0.1", self._target_port)
        for source, sink in ((client, to_upstream), (upstream, to_client)):
            pump = asyncio.create_task(_pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass  # the other side went away: so does this direction
    finally:
        sink.close()


@pytest.mark.slow
async def test_the_worker_finishes_the_activity_in_hand_then_exits_0(tmp_path: Path) -> None:
    temporal_port, sandbox_port, metrics_port = free_port(), free_port(), free_port()
    temporal_address = f"127.0.0.1:{temporal_port}"
    task_queue = f"drain-{uuid.uuid4()}"
    ensure_dev_keys(tmp_path / "keys")
    sandbox = create_sandbox_app(sandbox_settings(tmp_path / "keys", sandbox_port))
    gateway = SlowGateway(sandbox_port)
    async with (
        serving(sandbox, sandbox_port),
        gateway.serving() as gateway_url,
        processes(
            tmp_path,
            PAYSAGA_TEMPORAL_ADDRESS=temporal_address,
            PAYSAGA_TASK_QUEUE=task_queue,
            PAYSAGA_SANDBOX_URL=gateway_url,
            PAYSAGA_WORKER_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
        ) as supervisor,
    ):
        supervisor.start(
            "temporal", dev_server_command(port=temporal_port, ui_port=None, db_file=None)
        )
        await asyncio.to_thread(
            wait_for_port, "127.0.0.1", temporal_port, supervisor=supervisor, name="Temporal"
        )
        supervisor.start_paysaga("worker")
        # Its metrics are served once its Temporal runtime is made, before it polls.
        await asyncio.to_thread(
            wait_for_port, "127.0.0.1", metrics_port, supervisor=supervisor, name="the worker"
        )
        # With the processes' home: their payload key is the one that reads what they write.
        client = await connect_temporal(Settings(home=tmp_path, temporal_address=temporal_address))
        request = OrderRequest(
            order_id=ORDER,
            reservation_id="room-drain",
            days=3,
            amount_cents=2970,
            currency="CNY",
            gateway=Gateway.ALIPAY,
            request_fingerprint="f",
            payment_timeout_seconds=900,
            payment_create_timeout_seconds=60,
        )
        handle = await client.start_workflow(
            OrderWorkflow.run, request, id=order_workflow_id(ORDER), task_queue=task_queue
        )
        # The saga's first step asks the gateway to create the payment, which holds it.
        await asyncio.wait_for(gateway.connected.wait(), EXIT_SECONDS)
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert "temporal_worker_task_slots_used" in {
            family.name for family in text_string_to_metric_families(scraped)
        }

        worker = supervisor.children["worker"]
        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)
        assert worker.poll() is None, "the worker left with an activity in hand"
        gateway.released.set()
        assert await exit_status(worker) == 0

        history = await handle.fetch_history()
    # The creation steps are local activities: each one's result is a marker of its task.
    done = [
        json.loads(marker.details["data"].payloads[0].data)["activity_type"]
        for marker in (event.marker_recorded_event_attributes for event in history.events)
        if marker.marker_name == LOCAL_ACTIVITY_MARKER and not marker.HasField("failure")
    ]
    assert done == ["create_payment", "claim_reservation"]
    assert any(line["logger"] == "paysaga" for line in json_lines(tmp_path / "logs" / "worker.log"))
