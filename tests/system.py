"""The business's app calling the APIs of the whole system (`stack.system`), which the slow
tests run on the database PAYSAGA_TEST_DATABASE names (sqlite or postgresql)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from core.vocabulary import Gateway
from stack.notifications import Callback
from stack.system import System

DATABASE_KIND = os.environ.get("PAYSAGA_TEST_DATABASE", "sqlite")


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
