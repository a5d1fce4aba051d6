"""The whole system's load, as the business's app, its buyers and the gateways make it.

Orders go from `POST /v1/orders` through the buyer paying at the sandbox to the order reading
`paid`. Callbacks are genuine payment notifications of trades the buyers paid, each delivered
twice (the duplicate as a gateway's retry is: the same payment, signed anew), over both
gateways' doors.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Sequence
from functools import partial
from itertools import cycle

import httpx

from benchmarks.measure import Timed, pipelined
from core.vocabulary import Gateway
from stack.notifications import Callback, paid_trade_notification
from stack.system import System

# uvicorn closes a connection left idle for 5 s, and a request sent on one just as it closes
# fails unanswered: the load never reuses a connection idle for longer than this.
IDLE_CONNECTION_SECONDS = 1.0
# How often the business's app looks whether its buyer's order is paid (what the checkout
# page does by its events stream is once a second); each look is a GET the APIs serve.
POLL_SECONDS = 0.25


async def paid_orders(
    http: httpx.AsyncClient, system: System, count: int, concurrency: int, *, label: str
) -> Timed:
    """`count` orders, `concurrency` always in flight, each created, paid by its buyer, and
    awaited until it reads `paid`; each one's time to its QR code (POST answered), and the wall
    time."""
    gateways = cycle(Gateway)

    async def one(n: int) -> float:
        api = system.api_urls[n % len(system.api_urls)]
        started = time.perf_counter()
        order_id = await create(http, api, f"{label}-{n}", next(gateways))
        created = time.perf_counter() - started
        await answered(http.post(f"{system.sandbox_url}/sandbox/trades/{order_id}/pay"))
        while (await answered(http.get(f"{api}/v1/orders/{order_id}"))).json()["status"] != "paid":
            await asyncio.sleep(POLL_SECONDS)
        return created

    return await pipelined(count, concurrency, one)


async def create(http: httpx.AsyncClient, api: str, reservation: str, gateway: Gateway) -> str:
    body = {"reservation_id": reservation, "days": 1, "gateway": gateway}
    order_id: str = (await answered(http.post(f"{api}/v1/orders", json=body))).json()["order_id"]
    return order_id


async def trades_paid_unnotified(
    http: httpx.AsyncClient, system: System, count: int, concurrency: int, *, label: str
) -> list[dict[str, str]]:
    """`count` orders (the gateways in turn), paid by their buyers while the sandbox loses
    every notification: their sagas wait for the callbacks the benchmark delivers. The
    sandbox's view of each trade."""
    await answered(
        http.put(f"{system.sandbox_url}/sandbox/faults", json={"drop_notifications": count})
    )
    trades: list[dict[str, str]] = []

    async def one(n: int) -> float:
        api = system.api_urls[n % len(system.api_urls)]
        order_id = await create(http, api, f"{label}-{n}", list(Gateway)[n % len(Gateway)])
        await answered(http.post(f"{system.sandbox_url}/sandbox/trades/{order_id}/pay"))
        trades.append(
            (await answered(http.get(f"{system.sandbox_url}/sandbox/trades/{order_id}"))).json()
        )
        return 0.0

    await pipelined(count, concurrency, one)
    await answered(http.delete(f"{system.sandbox_url}/sandbox/faults"))
    return trades


def notifications_with_duplicates(
    system: System, trades: Sequence[dict[str, str]], *, seed: int
) -> list[tuple[Gateway, Callback]]:
    """Each trade's payment notification and a retry of it, signed now (WeChat Pay's
    signatures are only good for minutes), shuffled so that a duplicate may race its first."""
    notifications = [
        (
            Gateway(trade["gateway"]),
            paid_trade_notification(system.keys_dir, Gateway(trade["gateway"]), trade),
        )
        for trade in trades
        for _ in range(2)
    ]
    random.Random(seed).shuffle(notifications)
    return notifications


async def delivered(
    doors: Sequence[str], notifications: Sequence[tuple[Gateway, Callback]], concurrency: int
) -> Timed:
    """Deliver every notification to the doors in turn, `concurrency` at a time; each must be
    acknowledged (a 2xx), as the gateway requires before it stops sending. A gateway has its
    own connections: none left idle by earlier phases, which a server may have closed."""
    limits = httpx.Limits(keepalive_expiry=IDLE_CONNECTION_SECONDS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        return await pipelined(
            len(notifications), concurrency, partial(_deliver, http, doors, notifications)
        )


async def _deliver(
    http: httpx.AsyncClient,
    doors: Sequence[str],
    notifications: Sequence[tuple[Gateway, Callback]],
    n: int,
) -> float:
    gateway, callback = notifications[n]
    started = time.perf_counter()
    await answered(
        http.post(
            f"{doors[n % len(doors)]}/v1/callbacks/{gateway}",
            content=callback.body,
            headers=callback.headers,
        )
    )
    return time.perf_counter() - started


async def all_paid(
    http: httpx.AsyncClient, system: System, order_ids: Sequence[str], *, seconds: float = 300
) -> None:
    """Every one of these orders reads `paid` within `seconds`, or the run fails."""
    deadline = time.monotonic() + seconds
    for order_id in order_ids:
        url = f"{system.api_urls[0]}/v1/orders/{order_id}"
        while (status := (await answered(http.get(url))).json()["status"]) != "paid":
            if time.monotonic() > deadline:
                raise RuntimeError(f"order {order_id} reads {status}, not paid")
            await asyncio.sleep(POLL_SECONDS)


async def answered(request: Awaitable[httpx.Response]) -> httpx.Response:
    """The response, which must be a success: a benchmark that counts failures as work done
    measures nothing."""
    response = await request
    if not response.is_success:
        raise RuntimeError(
            f"{response.request.url} answered {response.status_code}: {response.text}"
        )
    return response
