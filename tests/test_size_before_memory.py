"""Size before memory, measured: 200 MB sent to an API process — announced with a
Content-Length, or streamed chunked — is refused with 413, and the process's memory (its
resident set, and the highest it ever reached) does not grow with it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from paysaga.dev import Supervisor, ensure_dev_keys, prepare_database, wait_for_port
from stack.ports import free_port
from tests.databases import database_url

pytestmark = pytest.mark.slow
SENT_BYTES = 200 * 2**20
CHUNK_BYTES = 2**20
ALLOWED_GROWTH_BYTES = 20 * 2**20
ROUTES = ("/v1/callbacks/alipay", "/v1/callbacks/wechatpay", "/v1/orders")


@contextmanager
def api_process(home: Path, kind: str) -> Iterator[tuple[str, int]]:
    """`paysaga api` as production runs it, over a database of this kind, with no Temporal to
    reach; its URL and process id."""
    ensure_dev_keys(home / "keys")
    with database_url(kind, home) as url:
        prepare_database(url)
        port = free_port()
        env = {
            **os.environ,
            "PAYSAGA_HOME": str(home),
            "PAYSAGA_DATABASE_URL": url,
            "PAYSAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "PAYSAGA_API_KEYS": "psk_test_size_before_memory",
            "PAYSAGA_API_PORT": str(port),
        }
        supervisor = Supervisor(env=env, log_dir=home / "logs")
        try:
            supervisor.start_paysaga("api")
            wait_for_port("127.0.0.1", port, supervisor=supervisor, name="the API")
            yield f"http://127.0.0.1:{port}", supervisor.children["api"].pid
        finally:
            supervisor.stop()


def memory(pid: int) -> dict[str, int]:
    """The process's resident set now (VmRSS) and at its highest (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_200_mb_is_refused_unread_and_memory_stays_flat(tmp_path: Path, kind: str) -> None:
    sent = 0

    async def body(total: int) -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(total // CHUNK_BYTES):
            sent += CHUNK_BYTES
            yield b"\x00" * CHUNK_BYTES

    with api_process(tmp_path, kind) as (url, pid):
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            # Each refusal once, small, so that what it loads (code, connections) is loaded.
            for route in ROUTES:
                response = await http.post(route, content=body(2 * CHUNK_BYTES))
                assert response.status_code == 413, response.text
            before = memory(pid)
            sent = 0
            for route in ROUTES:
                for announced in (True, False):
                    headers = {"Content-Length": str(SENT_BYTES)} if announced else {}
                    response = await http.post(route, content=body(SENT_BYTES), headers=headers)
                    assert response.status_code == 413, (route, announced, response.text)
            after = memory(pid)

    growth = {name: after[name] - before[name] for name in before}
    print(
        f"\n{kind}: {sent / 2**20:.0f} MB offered to {len(ROUTES)} routes, 200 MB a request; "
        f"API RSS {before['VmRSS'] / 2**20:.1f} → {after['VmRSS'] / 2**20:.1f} MB "
        f"(+{growth['VmRSS'] / 2**20:.2f}), peak {before['VmHWM'] / 2**20:.1f} → "
        f"{after['VmHWM'] / 2**20:.1f} MB (+{growth['VmHWM'] / 2**20:.2f})"
    )
    assert growth["VmRSS"] < ALLOWED_GROWTH_BYTES and growth["VmHWM"] < ALLOWED_GROWTH_BYTES
