"""Delivery of merchants' notifications, resent on their gateway's schedule, and a log of it.

Both gateways resend a notification until the merchant acknowledges it, on a fixed schedule
that `retry_scale` shrinks for tests and demos. What differs is supplied with each one: its
schedule, what counts as an acknowledgement, and how each attempt is made — Alipay sends the
very same signed form every time, WeChat Pay signs every attempt anew.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from sandbox.faults import FaultSwitch
from sandbox.tasks import BackgroundTasks

SEND_TIMEOUT_SECONDS = 10.0

# What happened to a trade that its merchant is told about.
TradeEvent = Literal["payment", "finish", "refund"]


@dataclass(frozen=True)
class Outgoing:
    """One attempt's HTTP request body and headers."""

    content: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class DeliveryRules:
    """A gateway's way of resending: seconds to wait before each attempt, the first included,
    and whether the merchant's answer ends the retries."""

    schedule: tuple[int, ...]
    acknowledged: Callable[[httpx.Response], bool]


@dataclass
class Delivery:
    """One notification's fate; duplicated copies share it, as they share the notify_id."""

    notify_id: str
    out_trade_no: str
    kind: TradeEvent
    attempts: int = 0
    delivered: bool = False
    lost: bool = False
    last_status: str | None = None


class Notifier:
    def __init__(self, *, faults: FaultSwitch, retry_scale: float, tasks: BackgroundTasks) -> None:
        self._faults = faults
        self._retry_scale = retry_scale
        self._tasks = tasks
        self._log: defaultdict[str, list[Delivery]] = defaultdict(list)
        self._client: httpx.AsyncClient | None = None

    def deliveries(self, out_trade_no: str) -> list[Delivery]:
        return list(self._log.get(out_trade_no, ()))

    def send(
        self,
        *,
        url: str,
        notify_id: str,
        out_trade_no: str,
        kind: TradeEvent,
        rules: DeliveryRules,
        attempt: Callable[[], Outgoing],
    ) -> Delivery:
        """Start delivering in the background; `attempt` makes each attempt's request."""
        delivery = Delivery(notify_id=notify_id, out_trade_no=out_trade_no, kind=kind)
        self._log[out_trade_no].append(delivery)
        copies = self._faults.take_notification_copies()
        if copies == 0:
            delivery.lost = True
            return delivery
        pauses = [seconds * self._retry_scale for seconds in rules.schedule]
        pauses[0] += self._faults.current.notification_delay_seconds
        for _ in range(copies):
            self._tasks.start(self._deliver(delivery, url, rules, attempt, pauses))
        return delivery

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(
        self,
        delivery: Delivery,
        url: str,
        rules: DeliveryRules,
        attempt: Callable[[], Outgoing],
        pauses: list[float],
    ) -> None:
        for number, pause in enumerate(pauses):
            await asyncio.sleep(pause)
            # Duplicates go out together the first time; after that an acknowledgement of
            # any copy ends the retries, as it would at the gateway.
            if number > 0 and delivery.delivered:
                return
            delivery.attempts += 1
            outgoing = attempt()
            try:
                response = await self._http().post(
                    url, content=outgoing.content, headers=dict(outgoing.headers)
                )
            except httpx.HTTPError as error:
                delivery.last_status = type(error).__name__
                continue
            delivery.last_status = f"{response.status_code} {response.text.strip()[:40]!r}"
            if rules.acknowledged(response):
                delivery.delivered = True
                return

    def _http(self) -> httpx.AsyncClient:
        # Made on first use so that it belongs to the event loop the server runs in.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS)
        return self._client
