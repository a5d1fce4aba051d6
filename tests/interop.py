"""What the interoperability tests share: our sandbox serving both gateways over loopback HTTP,
a merchant's notify_url that keeps whatever arrives, and the dev key files that both sides of
the wire read — ours, and the third-party SDKs' (wechatpayv3, python-alipay-sdk).

The SDKs are synchronous (requests, urllib) while the sandbox serves in this event loop, so
their calls run in a thread (`asyncio.to_thread`): called in the loop, they would wait forever
for a server that can no longer answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from core.settings import Settings
from paysaga.dev import ensure_dev_keys
from sandbox.app import create_app
from stack.ports import free_port
from tests.rig import sandbox_settings
from tests.servers import serving


@dataclass(frozen=True)
class Arrival:
    """One POST as it reached the notify_url: header names in lower case, the exact body."""

    headers: dict[str, str]
    body: bytes


class Inbox:
    """A merchant's notify_url at every path (`/{channel}`): it keeps what arrives and answers
    200 `success`, which Alipay and WeChat Pay alike take as received."""

    def __init__(self) -> None:
        self._arrived: defaultdict[str, asyncio.Queue[Arrival]] = defaultdict(asyncio.Queue)
        self.app = FastAPI()
        self.app.add_api_route("/{channel:path}", self._receive, methods=["POST"])

    async def next(self, channel: str, timeout: float = 5.0) -> Arrival:
        return await asyncio.wait_for(self._arrived[channel].get(), timeout)

    async def _receive(self, channel: str, request: Request) -> PlainTextResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        await self._arrived[channel].put(Arrival(headers, await request.body()))
        return PlainTextResponse("success")


@dataclass(frozen=True)
class World:
    keys: Path
    sandbox_url: str
    inbox_url: str
    inbox: Inbox
    http: httpx.AsyncClient
    # paysaga's own dev settings, pointed at this sandbox: what `gateways.registry` builds
    # our clients and notification doors from.
    settings: Settings

    def key(self, name: str) -> str:
        """A key file's text, e.g. `app_private.pem` (see `paysaga.dev.ensure_dev_keys`)."""
        return (self.keys / name).read_text()

    def notify_url(self, channel: str) -> str:
        return f"{self.inbox_url}/{channel}"

    async def buyer(self, action: str, out_trade_no: str) -> dict[str, Any]:
        """The buyer scans or pays in the sandbox; its view of the trade."""
        response = await self.http.post(
            f"{self.sandbox_url}/sandbox/trades/{out_trade_no}/{action}"
        )
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view


@asynccontextmanager
async def interop_world(home: Path) -> AsyncIterator[World]:
    keys = home / "keys"
    ensure_dev_keys(keys)
    port = free_port()
    inbox = Inbox()
    async with (
        serving(create_app(sandbox_settings(keys, port)), port) as sandbox_url,
        serving(inbox.app, free_port()) as inbox_url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        settings = Settings(
            home=home, sandbox_url=sandbox_url, public_base_url=f"{inbox_url}/paysaga"
        )
        yield World(keys, sandbox_url, inbox_url, inbox, http, settings)


def order_number(prefix: str) -> str:
    """Unique per call, and within both gateways' rules for order and refund numbers."""
    return f"{prefix}{uuid.uuid4().hex[:20]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)
