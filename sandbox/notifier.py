"""Delivery of signed notifications to merchants, with Alipay's retries, and a log of it.

A notification is signed once and the same form, with the same notify_id, is resent until
the merchant answers `success`: 8 attempts over about 25 hours, as Alipay makes them, on a
schedule that `retry_scale` shrinks.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from gateways.alipay_formats import format_time
from gateways.alipay_signing import NOTIFICATION_UNSIGNED, sign, signing_string
from sandbox.faults import FaultSwitch
from sandbox.trades import TradeEvent

# Seconds before each of Alipay's 8 attempts: at once, then 4m, 10m, 10m, 1h, 2h, 6h, 15h.
RETRY_SCHEDULE = (0, 4 * 60, 10 * 60, 10 * 60, 60 * 60, 2 * 3600, 6 * 3600, 15 * 3600)
SEND_TIMEOUT_SECONDS = 10.0


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
    def __init__(
        self,
        *,
        app_id: str,
        private_key: rsa.RSAPrivateKey,
        faults: FaultSwitch,
        retry_scale: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._app_id = app_id
        self._private_key = private_key
        self._faults = faults
        self._retry_scale = retry_scale
        self._clock = clock
        self._log: defaultdict[str, list[Delivery]] = defaultdict(list)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def deliveries(self, out_trade_no: str) -> list[Delivery]:
        return list(self._log.get(out_trade_no, ()))

    def send(
        self, *, url: str, out_trade_no: str, kind: TradeEvent, fields: dict[str, str]
    ) -> Delivery:
        """Sign `fields` as a notification and start delivering it in the background."""
        delivery = Delivery(notify_id=secrets.token_hex(17), out_trade_no=out_trade_no, kind=kind)
        self._log[out_trade_no].append(delivery)
        if self._faults.take_dropped_notification():
            delivery.lost = True
            return delivery
        form = self._signed(
            {
                **fields,
                "notify_time": format_time(self._clock()),
                "notify_type": "trade_status_sync",
                "notify_id": delivery.notify_id,
                "app_id": self._app_id,
                "auth_app_id": self._app_id,
                "charset": "utf-8",
                "version": "1.0",
                "sign_type": "RSA2",
            }
        )
        faults = self._faults.current
        pauses = [seconds * self._retry_scale for seconds in RETRY_SCHEDULE]
        pauses[0] += faults.notification_delay_seconds
        for _ in range(faults.duplicate_notifications):
            task = asyncio.create_task(self._deliver(delivery, url, form, pauses))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return delivery

    async def aclose(self) -> None:
        """Abandon pending deliveries: a stopped Alipay resends nothing."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _signed(self, form: dict[str, str]) -> dict[str, str]:
        message = signing_string(form, unsigned=NOTIFICATION_UNSIGNED)
        return {**form, "sign": sign(message, self._private_key)}

    async def _deliver(
        self, delivery: Delivery, url: str, form: dict[str, str], pauses: list[float]
    ) -> None:
        for attempt, pause in enumerate(pauses):
            await asyncio.sleep(pause)
            # Duplicates go out together the first time; after that a `success` to any copy
            # ends the retries, as it would at Alipay.
            if attempt > 0 and delivery.delivered:
                return
            delivery.attempts += 1
            try:
                response = await self._http().post(url, data=form)
            except httpx.HTTPError as error:
                delivery.last_status = type(error).__name__
                continue
            body = response.text.strip()
            delivery.last_status = f"{response.status_code} {body[:40]!r}"
            if response.status_code == 200 and body == "success":
                delivery.delivered = True
                return

    def _http(self) -> httpx.AsyncClient:
        # Made on first use so that it belongs to the event loop the server runs in.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS)
        return self._client
