"""The hosted checkout page in a real browser (tests/browser.py) against the whole system as
processes (the `system` fixture, shared with the other slow tests).

A buyer opens an order's page on a phone, where events keep it live, and on a desktop without
EventSource, where it polls; pays through the sandbox's wallet page, which the page's link
opens (the QR code's content); sees both pages say so and go back to the shop's return page.
A superseded order's page shows no QR code and nothing to pay. A deferred order's page shows
its price and a Pay button that brings the QR code; a stale one, whose order was superseded
meanwhile, shows why it cannot be paid and the current price instead. Along the way: nothing is
fetched from elsewhere, no script or style is refused (Content-Security-Policy), the text keeps
WCAG AA contrast, and phones' widths scroll only downwards. Screenshots at phone and desktop
widths are kept in `checkout/<database>/`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    ViewportSize,
    expect,
)

from core.vocabulary import Gateway
from stack.ports import free_port
from tests.browser import chromium, emptied, screenshot, screenshots
from tests.servers import serving
from tests.system import Shop

pytestmark = pytest.mark.slow
SCREENSHOTS = screenshots("checkout")
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=800)
# The narrowest and widest phones the page is made for.
PHONE_WIDTHS = (360, 430)
# Events arrive within a second or so, polls every two; the sandbox notifies at once.
LIVE_MS = 20_000
AMOUNT = "29.70 CNY"
# WCAG 2 contrast of each piece of visible text against what is behind it: what is under the
# AA ratio for its size (4.5, or 3 for large text: 24 px, or 18.66 px bold).
LOW_CONTRAST = """() => {
  const rgb = (color) => color.match(/[\\d.]+/g).map(Number);
  const luminance = (color) => {
    const [r, g, b] = rgb(color).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const behind = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const color = getComputedStyle(e).backgroundColor;
      const channels = rgb(color);
      if (channels.length < 4 || channels[3] > 0) return color;
    }
    return "rgb(255, 255, 255)";
  };
  const low = [];
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = texts.nextNode(); node; node = texts.nextNode()) {
    const element = node.parentElement;
    if (!node.textContent.trim() || !element.checkVisibility()) continue;
    const style = getComputedStyle(element);
    const shades = [luminance(style.color), luminance(behind(element))];
    const [light, dark] = shades.sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${node.textContent.trim()}: ${ratio.toFixed(2)}`);
  }
  return low;
}"""


@pytest.fixture(scope="module", autouse=True)
def fresh_screenshots() -> None:
    emptied(SCREENSHOTS)


@dataclass
class ReturnPage:
    """The shop's page the buyer comes back to: it notes each visit."""

    origin: str
    visits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.origin}/back"


@asynccontextmanager
async def return_page() -> AsyncIterator[ReturnPage]:
    app = FastAPI()
    port = free_port()
    page = ReturnPage(origin=f"http://127.0.0.1:{port}")

    @app.get("/back")
    def back(request: Request) -> HTMLResponse:
        page.visits.append(str(request.url))
        return HTMLResponse(
            '<!doctype html><title>Shop</title><link rel="icon" href="data:,">'
            "<h1>Back at the shop</h1>"
        )

    async with serving(app, port):
        yield page


@dataclass
class Watched:
    """A page and what it did: every request it made, and every error it logged (a script or
    style the Content-Security-Policy refused is one)."""

    page: Page
    requests: list[str]
    errors: list[str]

    def fetched(self, pattern: str) -> list[str]:
        return [url for url in self.requests if re.search(pattern, url)]


async def opened(context: BrowserContext, url: str) -> Watched:
    page = await context.new_page()
    watched = Watched(page, [], [])
    page.on("request", lambda request: watched.requests.append(request.url))

    def logged(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(f"{message.text} ({message.location['url']})")

    page.on("console", logged)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    await page.goto(url)
    return watched


async def phone(browser: Browser) -> BrowserContext:
    return await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)


async def desktop(browser: Browser, *, events: bool = True) -> BrowserContext:
    context = await browser.new_context(viewport=DESKTOP)
    if not events:
        await context.add_init_script("delete window.EventSource")
    return context


async def both_widths(watched: Watched, name: str) -> None:
    """Screenshots at a phone's width and a desktop's, each after checking the page there."""
    page = watched.page
    shown = page.viewport_size
    for width in PHONE_WIDTHS:
        await page.set_viewport_size(ViewportSize(width=width, height=PHONE["height"]))
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name} is {overflow} px too wide at {width} px"
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        await page.set_viewport_size(size)
        assert await page.evaluate(LOW_CONTRAST) == [], f"{name} ({label})"
        await screenshot(page, SCREENSHOTS, f"{name}-{label}")
    if shown is not None:
        await page.set_viewport_size(shown)


def checked(watched: Watched, api_url: str, *, elsewhere: tuple[str, ...] = ()) -> None:
    """Nothing came from anywhere but our API (and these pages the buyer went on to), and no
    script or style was refused."""
    assert watched.errors == []
    assert [url for url in watched.requests if not url.startswith((api_url, *elsewhere))] == []


async def created(shop: Shop, gateway: Gateway, reservation: str, **extra: Any) -> dict[str, Any]:
    response = await shop.create(reservation, 3, gateway=gateway, **extra)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    assert order["checkout_url"].startswith(shop.system.api_urls[0] + "/pay/")
    return order


def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api_url(shop: Shop) -> str:
    return shop.system.api_urls[0]


async def test_a_buyer_pays_on_the_page_and_is_taken_back_to_the_shop(
    shop: Shop, api_url: str
) -> None:
    async with return_page() as back, chromium(SCREENSHOTS) as browser:
        order = await created(shop, Gateway.ALIPAY, room(), return_url=back.url)
        live = await opened(await phone(browser), order["checkout_url"])
        polling = await opened(await desktop(browser, events=False), order["checkout_url"])
        page = live.page
        await expect(page.get_by_role("heading", level=1)).to_have_text("Checkout")
        await expect(page.get_by_role("status")).to_have_text(
            f"Scan the QR code with Alipay to pay {AMOUNT}."
        )
        await expect(page.locator("#amount")).to_have_text(AMOUNT)
        for fact in (order["reservation_id"], "Booking", "3 days", "Alipay"):
            await expect(page.get_by_role("definition").filter(has_text=fact)).to_have_count(1)
        code = page.get_by_role("img", name=f"QR code to scan with Alipay to pay {AMOUNT}")
        await expect(code).to_be_visible()
        assert await code.evaluate("image => image.complete && image.naturalWidth > 0")
        await expect(page.get_by_role("timer")).to_have_text(re.compile(r"^1?[0-9]:[0-5][0-9]$"))
        await both_widths(live, "pay")

        # The wallet: what the QR code holds, opened as the link offers it on a phone.
        link = page.get_by_role("link", name="Paying on this phone? Open Alipay")
        assert await link.get_attribute("href") == order["qr_code"]
        wallet = await page.context.new_page()
        await wallet.goto(order["qr_code"])
        await wallet.get_by_role("button", name="Pay").click()
        await expect(wallet.get_by_role("heading", name="Paid")).to_be_visible()

        paid = f"Paid: {AMOUNT} received through Alipay. Thank you!"
        # Each screenshot in the pause before the page goes back to the shop.
        for watched, label in ((live, "phone"), (polling, "desktop")):
            await expect(watched.page.get_by_role("status")).to_have_text(paid, timeout=LIVE_MS)
            await screenshot(watched.page, SCREENSHOTS, f"paid-{label}")
            await expect(watched.page.get_by_role("img")).to_have_count(0)
        for watched in (live, polling):
            await watched.page.wait_for_url(back.url, timeout=LIVE_MS)
        assert back.visits == [back.url, back.url]
        # Each page stayed live its own way: the phone by events, the desktop by polling.
        assert live.fetched(r"/events\?") and not live.fetched(r"/state\?")
        assert polling.fetched(r"/state\?") and not polling.fetched(r"/events\?")
        for watched in (live, polling):
            checked(watched, api_url, elsewhere=(back.origin,))


async def test_a_superseded_orders_page_offers_nothing_to_pay(shop: Shop, api_url: str) -> None:
    reservation = room()
    first = await created(shop, Gateway.WECHATPAY, reservation)
    await created(shop, Gateway.ALIPAY, reservation)
    async with chromium(SCREENSHOTS) as browser:
        watched = await opened(await phone(browser), first["checkout_url"])
        page = watched.page
        await expect(page.get_by_role("status")).to_contain_text("A newer order")
        await expect(page.get_by_role("status")).to_contain_text("can no longer be paid")
        # No QR code, no button, no link, no countdown: nothing here can be paid.
        await expect(page.get_by_role("img")).to_have_count(0)
        await expect(page.get_by_role("button")).to_have_count(0)
        await expect(page.get_by_role("link")).to_have_count(0)
        await expect(page.get_by_role("timer")).to_have_count(0)
        await both_widths(watched, "superseded")
        checked(watched, api_url)
        assert not watched.fetched(r"/qr\.svg")


async def test_a_deferred_order_is_paid_on_submit_and_a_stale_page_is_refused(
    shop: Shop, api_url: str
) -> None:
    async with chromium(SCREENSHOTS) as browser:
        order = await created(shop, Gateway.WECHATPAY, room(), payment="deferred")
        assert order["qr_code"] is None
        watched = await opened(await phone(browser), order["checkout_url"])
        page = watched.page
        pay = page.get_by_role("button", name=f"Pay {AMOUNT}")
        await expect(pay).to_be_visible()
        await expect(page.get_by_role("status")).to_have_text(
            f"Press Pay to get a QR code for {AMOUNT}, to scan with WeChat Pay."
        )
        await expect(page.get_by_role("img")).to_have_count(0)
        await expect(page.locator("#countdown")).to_contain_text("This price holds for")
        await both_widths(watched, "deferred")

        await pay.click()
        code = page.get_by_role("img", name=f"QR code to scan with WeChat Pay to pay {AMOUNT}")
        await expect(code).to_be_visible(timeout=LIVE_MS)
        await expect(pay).to_be_hidden()
        await expect(page.get_by_role("status")).to_have_text(
            f"Scan the QR code with WeChat Pay to pay {AMOUNT}."
        )
        await expect(page.get_by_role("timer")).to_have_text(re.compile(r"^[0-9]+:[0-5][0-9]$"))
        await both_widths(watched, "deferred-paying")
        checked(watched, api_url)

        reservation = room()
        stale = await created(shop, Gateway.ALIPAY, reservation, payment="deferred")
        context = await phone(browser)
        # The page hears nothing more of its order once loaded, as on a train out of coverage.
        await context.route(re.compile(r"/pay/[^/]+/(events|state)\?"), refused)
        watched = await opened(context, stale["checkout_url"])
        page = watched.page
        await expect(page.get_by_role("button", name=f"Pay {AMOUNT}")).to_be_visible()
        await created(shop, Gateway.ALIPAY, reservation, payment="deferred")
        await page.get_by_role("button", name=f"Pay {AMOUNT}").click()
        alert = page.get_by_role("alert")
        await expect(alert).to_contain_text(f"The current price is {AMOUNT}.", timeout=LIVE_MS)
        await expect(page.get_by_role("status")).to_have_text("This order can no longer be paid.")
        await expect(page.get_by_role("img")).to_have_count(0)
        await expect(page.get_by_role("button")).to_have_count(0)
        await expect(page.get_by_role("timer")).to_have_count(0)
        await both_widths(watched, "deferred-refused")
        assert not watched.fetched(r"/qr\.svg")


async def refused(route: Route) -> None:
    await route.abort("internetdisconnected")
