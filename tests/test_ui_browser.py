"""The Temporal Web UI of `paysaga dev`, in a real browser: Debian's Chromium driven by Playwright.

`paysaga dev` runs as an operator starts it, on free ports. An order is superseded and its QR
code paid late, so its payment is refunded; then the UI must list it, and no other order, by
`OrderStatus="refunded"`, show its summary, details and current details, and show its input
decrypted by our codec server: the same page, when the codec hands the payloads back as they
are, shows the ciphertext Temporal holds. Screenshots are kept under `PAYSAGA_TEST_ARTIFACTS`
(default `.artifacts` in the checkout), in `ui/<database>/`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from core.vocabulary import order_workflow_id
from stack.ports import free_port
from tests.browser import chromium, emptied, screenshot, screenshots
from tests.databases import database_url
from tests.interop import eventually
from tests.processes import alive, descendants
from tests.rig import Sandbox
from tests.system import DATABASE_KIND

pytestmark = pytest.mark.slow
SCREENSHOTS = screenshots("ui")
START_SECONDS = 120
STOP_SECONDS = 30
# Visibility is eventually consistent: a search may miss what was just written.
VISIBILITY_SECONDS = 30
UI_SECONDS = 20
DAYS = 3
# 3 days at the default 9.90 a day: on the wire, and in cents inside.
AMOUNT, AMOUNT_CENTS = "29.70", 2970


@dataclass(frozen=True)
class Dev:
    process: subprocess.Popen[bytes]
    api_url: str
    ui_url: str
    sandbox_url: str
    temporal_address: str
    home: Path

    @property
    def api_key(self) -> str:
        return (self.home / "api_key").read_text().strip()


@asynccontextmanager
async def paysaga_dev(home: Path, database: str) -> AsyncIterator[Dev]:
    """`paysaga dev` on free ports, ready; stopped at the end if the test did not stop it."""
    api_port, ui_port, temporal_port = free_port(), free_port(), free_port()
    api_url, sandbox_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{free_port()}"
    # Nothing of the caller's own paysaga settings may leak into the system under test.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PAYSAGA_")}
    env |= {
        "PAYSAGA_HOME": str(home),
        "PAYSAGA_DATABASE_URL": database,
        "PAYSAGA_API_PORT": str(api_port),
        "PAYSAGA_PUBLIC_BASE_URL": api_url,
        "PAYSAGA_SANDBOX_URL": sandbox_url,
        "PAYSAGA_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "PAYSAGA_TEMPORAL_UI_PORT": str(ui_port),
        # Not served: its default port may be another system's.
        "PAYSAGA_WORKER_METRICS_ADDRESS": "",
    }
    log = home / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paysaga.cli", "dev"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    dev = Dev(
        process=process,
        api_url=api_url,
        ui_url=f"http://127.0.0.1:{ui_port}",
        sandbox_url=sandbox_url,
        temporal_address=f"127.0.0.1:{temporal_port}",
        home=home,
    )
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert process.poll() is None, log.read_text()
                try:
                    api = await http.get(f"{dev.api_url}/readyz")
                    ui = await http.get(dev.ui_url)
                except httpx.TransportError:
                    return False
                return api.status_code == 200 and ui.status_code == 200

            await eventually(ready, timeout=START_SECONDS)
        yield dev
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class RefundedOrder:
    order_id: str
    reservation_id: str
    superseded_by: str


async def refunded_order(dev: Dev) -> RefundedOrder:
    """A booking superseded by a second one, its QR code paid late, the payment refunded."""
    reservation = f"room-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {dev.api_key}"}
    async with httpx.AsyncClient(base_url=dev.api_url, headers=headers, timeout=30) as http:
        orders = []
        for _ in range(2):
            response = await http.post(
                "/v1/orders",
                json={"reservation_id": reservation, "days": DAYS, "gateway": "alipay"},
            )
            assert response.status_code == 201, response.text
            orders.append(response.json()["order_id"])
        superseded, payable = orders
        # Alipay lets a QR code nobody scanned be paid after its trade was closed.
        await Sandbox(http, dev.sandbox_url).pay(superseded)

        async def refunded() -> bool:
            order = (await http.get(f"/v1/orders/{superseded}")).json()
            return bool(order["status"] == "refunded")

        await eventually(refunded, timeout=60)
    return RefundedOrder(order_id=superseded, reservation_id=reservation, superseded_by=payable)


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    return await context.new_page()


async def listed(page: Page, dev: Dev, query: str, workflow_ids: list[str]) -> None:
    """The workflow list for `query` shows exactly these workflows (newest first), once
    visibility has them."""
    url = f"{dev.ui_url}/namespaces/default/workflows?query={quote(query)}"
    rows = page.get_by_role("link", name=re.compile(r"^order-"))
    deadline = asyncio.get_running_loop().time() + VISIBILITY_SECONDS
    while True:
        await page.goto(url)
        try:
            await expect(rows).to_have_text(workflow_ids, timeout=3000)
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise


async def test_the_web_ui_lists_explains_and_decodes_a_refunded_order(tmp_path: Path) -> None:
    emptied(SCREENSHOTS)
    with database_url(DATABASE_KIND, tmp_path) as database:
        async with paysaga_dev(tmp_path, database) as dev:
            order = await refunded_order(dev)
            # A client without our codec: it reads what Temporal holds, as anyone with access may.
            plain = await Client.connect(dev.temporal_address)
            saga = plain.get_workflow_handle(order_workflow_id(order.order_id))
            await ended(saga)
            sealed = await stored_input(saga)
            assert sealed.metadata["encoding"] == b"binary/encrypted"
            assert b"amount_cents" not in sealed.data
            assert order.reservation_id.encode() not in sealed.data
            async with chromium(SCREENSHOTS) as browser:
                page = await new_page(browser)
                await the_list_finds_it_by_status(page, dev, order)
                await its_page_shows_it_decrypted(page, dev, order)
                await without_decryption_its_page_shows_ciphertext(
                    await new_page(browser), dev, order, sealed
                )
            await stops_with_all_its_processes(dev)


async def ended(saga: WorkflowHandle[Any, Any]) -> None:
    """The order is refunded just before its saga ends: then its details are the last ones."""

    async def completed() -> bool:
        return (await saga.describe()).status == WorkflowExecutionStatus.COMPLETED

    await eventually(completed, timeout=UI_SECONDS)


async def stored_input(saga: WorkflowHandle[Any, Any]) -> Payload:
    history = await saga.fetch_history()
    [payload] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    return payload


async def the_list_finds_it_by_status(page: Page, dev: Dev, order: RefundedOrder) -> None:
    workflow_id = order_workflow_id(order.order_id)
    # Both orders are there to be found, and the search for refunded ones finds one.
    both = [order_workflow_id(order.superseded_by), workflow_id]
    await listed(page, dev, f'ReservationId="{order.reservation_id}"', both)
    await listed(page, dev, 'OrderStatus="refunded"', [workflow_id])
    await screenshot(page, SCREENSHOTS, "list-refunded")


async def its_page_shows_it_decrypted(page: Page, dev: Dev, order: RefundedOrder) -> None:
    # Payloads cross the codec server on their way to the page.
    async with page.expect_response(
        lambda r: r.url.startswith(f"{dev.api_url}/codec/decode") and r.ok
    ):
        await page.goto(workflow_page(dev, order))
    shown_input = page.get_by_label("Input", exact=True)
    await expect(shown_input).to_contain_text(
        f'"reservation_id": "{order.reservation_id}"', timeout=UI_SECONDS * 1000
    )
    await expect(shown_input).to_contain_text(f'"amount_cents": {AMOUNT_CENTS}')
    await expect(page.get_by_label("Result", exact=True)).to_contain_text('"status": "refunded"')
    await screenshot(page, SCREENSHOTS, "workflow-input")

    # Summary, details and current details are Markdown, each rendered in a frame of its own.
    await page.get_by_role("tab", name="User Metadata").click()
    for frame, text in (
        ("summary", f"booking {DAYS} days, {AMOUNT} CNY, {order.reservation_id}"),
        ("details", f"order {order.order_id} through alipay"),
        ("current-details", "ended refunded"),
    ):
        shown = page.frame_locator(f"#user-metadata-{frame}").locator("main")
        await expect(shown).to_have_text(text, timeout=UI_SECONDS * 1000)
    await screenshot(page, SCREENSHOTS, "workflow-user-metadata")


async def without_decryption_its_page_shows_ciphertext(
    page: Page, dev: Dev, order: RefundedOrder, sealed: Payload
) -> None:
    await page.route(f"{dev.api_url}/codec/**", handing_back(dev))
    await page.goto(workflow_page(dev, order))
    await expect(page.get_by_label("Input", exact=True)).to_have_text(
        f'"{base64.b64encode(sealed.data).decode()}"', timeout=UI_SECONDS * 1000
    )
    await screenshot(page, SCREENSHOTS, "workflow-input-without-decryption")


async def stops_with_all_its_processes(dev: Dev) -> None:
    children = descendants(dev.process.pid)
    commands = list(children.values())
    assert sum("start-dev" in command for command in commands) == 1, commands
    paysaga = sorted(command[-1] for command in commands if "paysaga.cli" in command)
    assert paysaga == ["api", "sandbox", "worker"], commands
    dev.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(dev.process.wait, STOP_SECONDS) == 0
    assert [pid for pid in children if alive(pid)] == []


def workflow_page(dev: Dev, order: RefundedOrder) -> str:
    return f"{dev.ui_url}/namespaces/default/workflows/{order_workflow_id(order.order_id)}"


def handing_back(dev: Dev) -> Callable[[Route], Awaitable[None]]:
    """A codec that answers with the payloads it is given: what the page shows undecrypted."""

    async def answer(route: Route) -> None:
        await route.fulfill(
            status=200,
            content_type="application/json",
            body=route.request.post_data or "",
            headers={"Access-Control-Allow-Origin": dev.ui_url},
        )

    return answer
