"""How fast the whole system takes orders, settles payments and acknowledges callbacks.

Starts the same processes as the full-stack tests (Temporal dev server, sandbox, two workers,
API processes) and prints: order creation latency (POST until the QR code exists), time from
the buyer paying to the order reading `paid`, callback acknowledgement rate for a repeated
notification, and the resident memory of each process.

    python -m benchmarks.order_flow [--orders 100] [--concurrency 10] [--callbacks 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from core.settings import SANDBOX_APP_ID
from gateways.alipay_signing import NOTIFICATION_UNSIGNED, load_private_key, sign, signing_string
from tests.system import API_KEY, System, running_system


async def timed_batch(
    count: int, concurrency: int, step: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    """Latencies of `count` calls of `step`, `concurrency` at a time, and the wall time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            await step(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return latencies, time.perf_counter() - started


def report(name: str, latencies: list[float], wall: float) -> None:
    ms = sorted(1000 * latency for latency in latencies)
    p95, p99 = ms[int(0.95 * (len(ms) - 1))], ms[int(0.99 * (len(ms) - 1))]
    print(
        f"{name:<34} n={len(ms):<5} {len(ms) / wall:7.1f}/s   p50 {statistics.median(ms):7.1f} ms"
        f"   p95 {p95:7.1f} ms   p99 {p99:7.1f} ms"
    )


async def run(system: System, orders: int, concurrency: int, callbacks: int) -> None:
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as http:
        created: list[str] = []

        async def create(n: int) -> None:
            url = system.api_urls[n % 2]
            body = {"reservation_id": f"bench-{n}", "days": 1}
            response = await http.post(f"{url}/v1/orders", json=body)
            response.raise_for_status()
            created.append(response.json()["order_id"])

        report("create order (QR code ready)", *await timed_batch(orders, concurrency, create))

        async def pay_and_settle(n: int) -> None:
            order_id = created[n]
            (
                await http.post(f"{system.sandbox_url}/sandbox/trades/{order_id}/pay")
            ).raise_for_status()
            while (await http.get(f"{system.api_urls[0]}/v1/orders/{order_id}")).json()[
                "status"
            ] != "paid":
                await asyncio.sleep(0.02)

        report(
            "buyer pays -> order reads paid",
            *await timed_batch(orders, concurrency, pay_and_settle),
        )

        order_id = created[0]
        trade = (await http.get(f"{system.sandbox_url}/sandbox/trades/{order_id}")).json()
        key = load_private_key(system.keys_dir / "sandbox_private.pem")
        params = {
            "notify_type": "trade_status_sync",
            "notify_id": "bench-repeat",
            "notify_time": "2026-11-23 20:00:00",
            "app_id": SANDBOX_APP_ID,
            "charset": "utf-8",
            "version": "1.0",
            "sign_type": "RSA2",
            "out_trade_no": order_id,
            "trade_no": trade["trade_no"],
            "trade_status": "TRADE_SUCCESS",
            "total_amount": trade["total_amount"],
        }
        params["sign"] = sign(signing_string(params, unsigned=NOTIFICATION_UNSIGNED), key)

        async def callback(n: int) -> None:
            url = system.api_urls[n % 2]
            response = await http.post(f"{url}/v1/callbacks/alipay", data=params)
            assert response.text == "success", response.text

        report("repeated notification acknowledged", *await timed_batch(callbacks, 16, callback))

    print("\nresident memory:")
    for name, process in system.supervisor.children.items():
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        print(f"  {name:<10} {int(rss) / 1024:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--callbacks", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/paysaga.db"
        with running_system(Path(home), url) as system:
            asyncio.run(run(system, args.orders, args.concurrency, args.callbacks))


if __name__ == "__main__":
    main()
