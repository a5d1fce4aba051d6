"""The whole system as separate processes, as `paysaga dev` runs it, on free loopback ports.

The Temporal dev server, the sandbox gateway, workers and API processes share one database.
The APIs take orders with a long payment timeout (ten minutes unless told), but one more that
takes them with a short one. The full-stack tests, the benchmark and the chaos drill all run this.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine.url import make_url
from temporalio.client import Client

from core.settings import Settings
from core.temporal import connect_temporal
from paysaga.dev import (
    Supervisor,
    compile_bytecode,
    ensure_dev_keys,
    prepare_database,
    sandbox_env,
    wait_for_port,
)
from paysaga.temporal_server import dev_server_command
from stack.ports import free_port
from stack.tcp_proxy import TcpProxy

API_KEY = "psk_test_full_stack"
ADMIN_KEY = "pak_test_full_stack_operators"
TASK_QUEUE = "paysaga-full-stack"
SHORT_TIMEOUT_SECONDS = 4
# Short, so that a failing gateway's orders are refused within the scenarios' patience; long
# enough that a burst of twenty windows gets its QR codes on a busy two-core host running both
# databases' slow tiers at once (3 s was not, in CI).
CREATE_TIMEOUT_SECONDS = 8
LONG_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class System:
    temporal_address: str
    sandbox_url: str
    api_urls: tuple[str, ...]  # the long payment timeout
    short_timeout_api_url: str
    database_url: str
    keys_dir: Path
    logs: Path
    supervisor: Supervisor
    # Each of our processes by name (`worker-0`, `api-1`, ...): what it runs, with what.
    commands: dict[str, tuple[str, dict[str, str]]]
    temporal_command: list[str]
    database_proxy: TcpProxy | None  # PostgreSQL only: the way to cut the database off

    @property
    def workers(self) -> list[str]:
        return [name for name in self.commands if name.startswith("worker-")]

    async def temporal_client(self) -> Client:
        """A Temporal client as our processes have it: with their payload encryption key."""
        settings = Settings(home=self.keys_dir.parent, temporal_address=self.temporal_address)
        return await connect_temporal(settings)

    def kill(self, name: str) -> None:
        """As a crash would: SIGKILL, no goodbye to anyone."""
        process = self.supervisor.children[name]
        process.kill()
        process.wait()

    def start(self, name: str) -> None:
        """Start one of our processes again, as it first ran; an API is waited for."""
        command, env = self.commands[name]
        self.supervisor.start_paysaga(command, name=name, **env)
        if command == "api":
            port = int(env["PAYSAGA_API_PORT"])
            wait_for_port("127.0.0.1", port, supervisor=self.supervisor, name=name)

    @contextmanager
    def paused(self, names: Iterable[str]) -> Iterator[None]:
        """These processes stopped (SIGSTOP) for the block, as a stalled machine would stop
        them, and then let go on where they were."""
        stopped = [self.supervisor.children[name] for name in names]
        for process in stopped:
            process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for process in stopped:
                process.send_signal(signal.SIGCONT)

    def kill_workers(self) -> None:
        for name in self.workers:
            self.kill(name)

    def start_workers(self) -> None:
        for name in self.workers:
            self.start(name)

    def kill_temporal(self) -> None:
        self.kill("temporal")

    def start_temporal(self) -> None:
        """The same server on the same port and state file: what a restart after a crash is."""
        self.supervisor.start("temporal", self.temporal_command)
        host, _, port = self.temporal_address.rpartition(":")
        wait_for_port(host, int(port), supervisor=self.supervisor, name="Temporal")


@contextmanager
def running_system(
    home: Path,
    database_url: str,
    *,
    workers: int = 2,
    apis: int = 2,
    payment_timeout_seconds: int = LONG_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
    cuttable_database: bool = True,
) -> Iterator[System]:
    """`workers` workers and `apis` APIs with the long payment timeout (`payment_timeout_seconds`),
    plus the short-timeout API; `env` is added to every process's environment. A PostgreSQL
    database is reached through a proxy that can cut it off, unless `cuttable_database` is
    false (the proxy relays every byte through this process)."""
    ensure_dev_keys(home / "keys")
    compile_bytecode()
    prepare_database(database_url)
    database_proxy = None
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql" and cuttable_database:
        database_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        database_proxy.start()
        database_url = url.set(port=database_proxy.port).render_as_string(hide_password=False)
    temporal_port, sandbox_port = free_port(), free_port()
    api_ports = [free_port() for _ in range(apis + 1)]
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
        "PAYSAGA_PAYMENT_CREATE_TIMEOUT_SECONDS": str(CREATE_TIMEOUT_SECONDS),
        # The scenarios poll orders often; the budget itself is tested elsewhere.
        "PAYSAGA_RATE_LIMIT_REQUESTS": "1000000",
        # Webhooks handed over and tried again within the scenarios' patience.
        "PAYSAGA_WEBHOOK_RELAY_EVERY_SECONDS": "0.2",
        "PAYSAGA_WEBHOOK_RETRY_INITIAL_SECONDS": "0.5",
        **(env or {}),
    }
    supervisor = Supervisor(env=base_env, log_dir=home / "logs")
    settings = Settings(home=home, sandbox_url=sandbox_url)
    commands: dict[str, tuple[str, dict[str, str]]] = {}
    # A payment is notified to the API that took its order; each worker's own notify_url
    # (Alipay's refund notices) points at one of the APIs, so that they reach them all. Each
    # worker serves its SDK metrics on a port of its own.
    for n in range(workers):
        commands[f"worker-{n}"] = (
            "worker",
            {
                "PAYSAGA_PUBLIC_BASE_URL": api_urls[n % apis],
                "PAYSAGA_WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            },
        )
    for n, port in enumerate(api_ports):
        short = n == apis
        commands[f"api-{n}"] = (
            "api",
            {
                "PAYSAGA_API_PORT": str(port),
                "PAYSAGA_PUBLIC_BASE_URL": api_urls[n],
                "PAYSAGA_PAYMENT_TIMEOUT_SECONDS": str(
                    SHORT_TIMEOUT_SECONDS if short else payment_timeout_seconds
                ),
                # Orders taken by the short-timeout API stop watching for late payments soon
                # after their deadline, so that both ways a late payment is refunded (by the
                # order's saga while it watches, by a late-payment saga after) are exercised.
                "PAYSAGA_LATE_PAYMENT_HORIZON_SECONDS": str(
                    SHORT_TIMEOUT_SECONDS if short else 90000
                ),
            },
        )
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
        for name, (command, process_env) in commands.items():
            supervisor.start_paysaga(command, name=name, **process_env)
        for port in api_ports:
            wait_for_port("127.0.0.1", port, supervisor=supervisor, name="an API")
        yield System(
            temporal_address=temporal_address,
            sandbox_url=sandbox_url,
            api_urls=tuple(api_urls[:apis]),
            short_timeout_api_url=api_urls[apis],
            database_url=database_url,
            keys_dir=home / "keys",
            logs=home / "logs",
            supervisor=supervisor,
            commands=commands,
            temporal_command=temporal_command,
            database_proxy=database_proxy,
        )
    finally:
        supervisor.stop()
        if database_proxy is not None:
            database_proxy.cut()
