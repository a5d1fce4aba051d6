"""The hosted checkout page's routes, served for real over HTTP on SQLite and on PostgreSQL,
without Temporal: the token opens the page and nothing else does (one 404 for every other
link, never a 500), what the page and its state say as the order changes, the server-sent
events, the QR code's SVG, and the page's own assets."""

from __future__ import annotations

import json
import re
import secrets
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import segno
from sqlalchemy.engine import Engine

from api import checkout
from api.app import create_app
from core.contracts import ClaimRequest, OperatorAction, OrderEnding, PaymentNotice
from core.settings import Settings
from core.vocabulary import Gateway, OrderStatus, PaymentTiming
from paysaga.dev import ensure_dev_keys
from stack.ports import free_port
from store import orders
from store.db import transaction
from tests.orders import DAY_CENTS, claim, order_request
from tests.servers import serving

SVG = "{http://www.w3.org/2000/svg}"
ALIPAY_CODE = "http://127.0.0.1:8300/qr/ord_page"
WECHATPAY_CODE = "weixin://wxpay/bizpayurl?pr=abc123"
ROUTES = ("", "/state", "/events", "/qr.svg")
Ending = Literal[OrderStatus.EXPIRED, OrderStatus.CANCELLED]
ENDINGS: tuple[Ending, ...] = (OrderStatus.EXPIRED, OrderStatus.CANCELLED)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dev mode's keys, which the API's callback doors load at start."""
    home = tmp_path_factory.mktemp("checkout")
    ensure_dev_keys(home / "keys")
    return home


@asynccontextmanager
async def api(engine: Engine, home: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Our API over this database, with no Temporal to reach; a client of it."""
    app = create_app(
        Settings(
            home=home,
            database_url=engine.url.render_as_string(hide_password=False),
            temporal_address=f"127.0.0.1:{free_port()}",
        )
    )
    async with (
        serving(app, free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


def checkout_order(
    engine: Engine,
    order_id: str,
    *,
    reservation: str | None = None,
    gateway: Gateway = Gateway.ALIPAY,
    qr_code: str | None = ALIPAY_CODE,
    payment: PaymentTiming = PaymentTiming.IMMEDIATE,
    return_url: str | None = None,
    expires_in: timedelta = timedelta(minutes=15),
) -> str:
    """A pending order with a checkout page, as a saga's claim makes it; its page's token."""
    token = secrets.token_urlsafe(24)
    request = order_request(
        order_id, reservation=reservation or f"room-{order_id}", gateway=gateway
    ).model_copy(update={"checkout_token": token, "payment": payment, "return_url": return_url})
    now = datetime.now(UTC)
    with transaction(engine) as session:
        orders.claim_reservation(
            session,
            request=ClaimRequest(order=request, expires_at=now + expires_in, qr_code=qr_code),
            now=now,
        )
    return token


def pay(engine: Engine, order_id: str) -> None:
    notice = PaymentNotice(
        gateway=Gateway.ALIPAY,
        order_id=order_id,
        trade_no=f"2026{secrets.randbelow(10**20):020d}",
        amount_cents=DAY_CENTS * 3,
        paid_at=datetime.now(UTC),
    )
    with transaction(engine) as session:
        assert orders.settle_payment(session, notice=notice, now=datetime.now(UTC)).refund is None


def end(engine: Engine, order_id: str, status: Ending) -> None:
    ending = OrderEnding(order_id=order_id, status=status, reason="test")
    with transaction(engine) as session:
        orders.end_order(session, ending=ending, now=datetime.now(UTC))


async def state_of(http: httpx.AsyncClient, order_id: str, token: str) -> dict[str, Any]:
    response = await http.get(f"/pay/{order_id}/state", params={"token": token})
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


class Page(HTMLParser):
    """What a browser would fetch for the page, and the state it starts from."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.fetched: list[str] = []
        self.data: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {name: value or "" for name, value in attrs}
        if tag in ("script", "img") and named.get("src"):
            self.fetched.append(named["src"])
        if tag == "link":
            self.fetched.append(named["href"])
        if tag == "main":
            self.data = {name: value for name, value in named.items() if name.startswith("data-")}


async def test_the_token_opens_the_page_and_nothing_else_does(engine: Engine, home: Path) -> None:
    token = checkout_order(engine, "ord_page")
    other = checkout_order(engine, "ord_other")
    # An order made before checkout pages: no token opens it.
    claim(engine, "ord_old", reservation="room-old")
    async with api(engine, home) as http:
        page = await http.get("/pay/ord_page", params={"token": token})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe" not in policy
        for source in ("script-src", "style-src", "img-src", "connect-src"):
            assert f"{source} 'self';" in policy

        refusals = [
            ("/pay/ord_page", {"token": "wrong"}),
            ("/pay/ord_page", {"token": other}),
            ("/pay/ord_page", {"token": token[:-1]}),
            ("/pay/ord_page", {"token": ""}),
            ("/pay/ord_page", {}),
            ("/pay/ord_page", {"token": "é"}),
            ("/pay/ord_page", {"token": "x" * 5000}),
            ("/pay/ord_nobody", {"token": token}),
            ("/pay/ord_old", {"token": ""}),
            ("/pay/ord_old", {}),
            ("/pay/%00", {"token": token}),
            ("/pay/ord%20page", {"token": token}),
            ("/pay/" + "o" * 65, {"token": token}),
            ("/pay/ørd", {"token": token}),
        ]
        for route in ROUTES:
            bodies = set()
            for path, params in refusals:
                path = path.replace("ord_page", f"ord_page{route}") if route else path
                if route and not path.endswith(route):
                    path += route
                response = await http.get(path, params=params)
                assert response.status_code == 404, (path, params, response.text)
                assert response.headers["referrer-policy"] == "no-referrer"
                bodies.add(response.content)
            assert len(bodies) == 1, (route, bodies)
        # A query string that is not UTF-8 is no token either.
        raw = await http.get("/pay/ord_page?token=%FF%FE")
        assert raw.status_code == 404 and raw.content == (await http.get("/pay/x")).content


async def test_the_page_shows_what_is_paid_and_fetches_nothing_from_elsewhere(
    engine: Engine, home: Path
) -> None:
    token = checkout_order(engine, "ord_page", reservation="room-101", gateway=Gateway.WECHATPAY)
    async with api(engine, home) as http:
        response = await http.get("/pay/ord_page", params={"token": token})
        text = response.text
        for shown in ("room-101", "Booking", "3 days", "29.70 CNY", "WeChat Pay"):
            assert f"<dd>{shown}</dd>" in text or f'<dd id="amount">{shown}</dd>' in text
        assert 'alt="QR code to scan with WeChat Pay to pay 29.70 CNY"' in text
        assert 'role="status" aria-live="polite"' in text
        page = Page(text)
        assert page.fetched == [
            "assets/icon.svg",
            "assets/checkout.css",
            "assets/checkout.js",
            f"ord_page/qr.svg?token={token}",
        ]
        # The state the script starts from is the state route's, but for the countdown.
        started = json.loads(page.data["data-state"])
        now = await state_of(http, "ord_page", token)
        assert started.pop("seconds_left") >= now.pop("seconds_left")
        assert started == now
        assert page.data["data-token"] == token
        assert page.data["data-payment-url"] == "../v1/orders/ord_page/payment"
        # Relative to the page, as a browser resolves them.
        for fetched in [*page.fetched, page.data["data-state-url"], page.data["data-events-url"]]:
            resolved = response.url.join(fetched)
            assert resolved.host == response.url.host and resolved.port == response.url.port
            async with http.stream("GET", resolved) as answer:
                assert answer.status_code == 200, fetched


async def test_the_state_follows_the_order(engine: Engine, home: Path) -> None:
    scanned = checkout_order(engine, "ord_scan", reservation="room-1", return_url="https://s/x")
    deferred = checkout_order(
        engine, "ord_quote", reservation="room-2", qr_code=None, payment=PaymentTiming.DEFERRED
    )
    wechat = checkout_order(
        engine,
        "ord_wechat",
        reservation="room-3",
        qr_code=WECHATPAY_CODE,
        gateway=Gateway.WECHATPAY,
    )
    late = checkout_order(engine, "ord_late", reservation="room-4", expires_in=-timedelta(1))
    async with api(engine, home) as http:
        scan = await state_of(http, "ord_scan", scanned)
        assert scan["status"] == "pending" and scan["phase"] == "scan" and not scan["final"]
        assert scan["message"] == "Scan the QR code with Alipay to pay 29.70 CNY."
        assert scan["qr_image"] == f"ord_scan/qr.svg?token={scanned}"
        assert scan["pay_link"] == ALIPAY_CODE
        assert 890 <= scan["seconds_left"] <= 900
        assert scan["return_url"] is None

        quote = await state_of(http, "ord_quote", deferred)
        assert quote["phase"] == "quote" and quote["qr_image"] is None
        assert quote["pay_link"] is None and quote["seconds_left"] > 0
        assert "Press Pay" in quote["message"] and "29.70 CNY" in quote["message"]

        # WeChat Pay's Native codes pay only when scanned: no link to open.
        code = await state_of(http, "ord_wechat", wechat)
        assert code["phase"] == "scan" and code["pay_link"] is None
        assert "WeChat Pay" in code["message"]

        overdue = await state_of(http, "ord_late", late)
        assert overdue["phase"] == "overdue" and not overdue["final"]
        assert overdue["qr_image"] is None and overdue["pay_link"] is None
        assert overdue["expires_at"] is None and overdue["seconds_left"] is None
        assert "time to pay is up" in overdue["message"]

        pay(engine, "ord_scan")
        paid = await state_of(http, "ord_scan", scanned)
        assert (paid["phase"], paid["final"], paid["return_url"]) == ("paid", True, "https://s/x")
        assert paid["qr_image"] is None and paid["pay_link"] is None

        newer = checkout_order(engine, "ord_newer", reservation="room-2")
        superseded = await state_of(http, "ord_quote", deferred)
        assert superseded["phase"] == "superseded" and superseded["final"]
        assert "newer order" in superseded["message"]
        assert superseded["qr_image"] is None and superseded["pay_link"] is None
        assert "ord_newer" not in json.dumps(superseded) and newer not in json.dumps(superseded)

        for status in ENDINGS:
            order_id = f"ord_{status}"
            token = checkout_order(engine, order_id)
            end(engine, order_id, status)
            ended = await state_of(http, order_id, token)
            assert (ended["phase"], ended["final"], ended["qr_image"]) == (status, True, None)
            assert status in ended["message"]
            assert "can no longer be paid" in ended["message"]
            page = await http.get(f"/pay/{order_id}", params={"token": token})
            assert Page(page.text).fetched == [
                "assets/icon.svg",
                "assets/checkout.css",
                "assets/checkout.js",
            ]


class Events:
    """A server-sent events stream, read block by block."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> list[str]:
        """The next block's lines, comments included; [] once the stream has ended."""
        block: list[str] = []
        async for line in self._lines:
            if line == "":
                if block:
                    return block
                continue
            block.append(line)
        return block

    async def state(self) -> dict[str, Any]:
        """The next event's state, past any comments."""
        while True:
            block = await self.next()
            assert block, "the stream ended"
            data = [line.removeprefix("data: ") for line in block if line.startswith("data: ")]
            if data:
                state: dict[str, Any] = json.loads("\n".join(data))
                return state


async def test_events_send_the_state_then_each_change_and_end_when_final(
    engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkout, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(checkout, "KEEP_ALIVE_SECONDS", 0.2)
    token = checkout_order(engine, "ord_live")
    async with (
        api(engine, home) as http,
        http.stream("GET", "/pay/ord_live/events", params={"token": token}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        events = Events(response)
        # How soon to come back once the server ends a stream; then the state, at once.
        assert await events.next() == [f"retry: {checkout.RECONNECT_MILLISECONDS}"]
        first = await events.state()
        now = await state_of(http, "ord_live", token)
        assert first.pop("seconds_left") >= now.pop("seconds_left")
        assert first == now and first["phase"] == "scan"
        # Nothing changes: comments keep the stream alive, and no event repeats the state.
        assert await events.next() == [": keep-alive"]
        assert await events.next() == [": keep-alive"]
        # An operator gives the buyer more time: the countdown must hear of it.
        later = datetime.now(UTC) + timedelta(hours=1)
        with transaction(engine) as session:
            action = OperatorAction(order_id="ord_live", action="extend_deadline", until=later)
            orders.extend_deadline(session, action=action, now=datetime.now(UTC))
        extended = await events.state()
        assert extended["phase"] == "scan" and extended["seconds_left"] > 3500
        assert datetime.fromisoformat(extended["expires_at"]) == later
        pay(engine, "ord_live")
        paid = await events.state()
        assert (paid["phase"], paid["final"], paid["qr_image"]) == ("paid", True, None)
        assert await events.next() == []


async def test_a_stream_ends_in_time_for_a_drain_and_a_final_order_streams_once(
    engine: Engine, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkout, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(checkout, "STREAM_SECONDS", 0.5)
    pending = checkout_order(engine, "ord_pending")
    ended = checkout_order(engine, "ord_ended")
    end(engine, "ord_ended", OrderStatus.EXPIRED)
    async with api(engine, home) as http:
        for order_id, token, phase in (
            ("ord_pending", pending, "scan"),
            ("ord_ended", ended, "expired"),
        ):
            async with http.stream(
                "GET", f"/pay/{order_id}/events", params={"token": token}
            ) as response:
                events = Events(response)
                assert (await events.next())[0].startswith("retry: ")
                assert (await events.state())["phase"] == phase
                assert await events.next() == []


def dark_modules(svg: ElementTree.Element) -> set[tuple[int, int]]:
    """The modules the SVG paints dark, as (column, row): segno draws each row's runs of dark
    modules as horizontal strokes one module wide, through the middle of the row."""
    [line] = [path for path in svg.iter(f"{SVG}path") if path.get("class") == "qrline"]
    x = y = 0.0
    dark = set()
    for command, first, second in re.findall(
        r"([Mmh])(-?[0-9.]+)(?: (-?[0-9.]+))?", line.get("d", "")
    ):
        if command == "M":
            x, y = float(first), float(second)
        elif command == "m":
            x, y = x + float(first), y + float(second)
        else:
            dark |= {(int(x) + n, int(y)) for n in range(int(first))}
            x += float(first)
    return dark


async def test_the_qr_code_is_an_svg_of_the_orders_code_while_it_may_be_paid(
    engine: Engine, home: Path
) -> None:
    token = checkout_order(engine, "ord_qr", qr_code=ALIPAY_CODE)
    async with api(engine, home) as http:
        response = await http.get("/pay/ord_qr/qr.svg", params={"token": token})
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.headers["cache-control"] == "no-store"
        svg = ElementTree.fromstring(response.content)
        assert svg.tag == f"{SVG}svg"
        assert svg.findtext(f"{SVG}title") == "QR code to scan with Alipay to pay 29.70 CNY"
        matrix = segno.make(ALIPAY_CODE, micro=False).matrix
        # Four light modules of quiet zone all round, painted white whatever the page's colour.
        side = len(matrix) + 8
        assert svg.get("viewBox") == f"0 0 {side} {side}"
        assert svg.get("width") is None and svg.get("height") is None
        [background] = [path for path in svg.iter(f"{SVG}path") if path.get("fill") == "#fff"]
        assert background.get("d") == f"M0 0h{side}v{side}h-{side}z"
        assert dark_modules(svg) == {
            (column + 4, row + 4)
            for row, modules in enumerate(matrix)
            for column, module in enumerate(modules)
            if module
        }
        assert dark_modules(svg) != {
            (column + 4, row + 4)
            for row, modules in enumerate(segno.make(ALIPAY_CODE + "x", micro=False).matrix)
            for column, module in enumerate(modules)
            if module
        }

        checkout_order(engine, "ord_newer", reservation="room-ord_qr")
        gone = await http.get("/pay/ord_qr/qr.svg", params={"token": token})
        assert gone.status_code == 404


async def test_the_page_s_own_assets_are_served_and_revalidated(engine: Engine, home: Path) -> None:
    async with api(engine, home) as http:
        for name, media_type in (
            ("checkout.css", "text/css; charset=utf-8"),
            ("checkout.js", "text/javascript; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
        ):
            response = await http.get(f"/pay/assets/{name}")
            assert response.status_code == 200
            assert response.headers["content-type"] == media_type
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-content-type-options"] == "nosniff"
            # Nothing they load comes from elsewhere: no URL but the SVG namespace's name.
            text = response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert not re.search(r"url\(|@import|https?:|//[a-z]", text), name
            etag = response.headers["etag"]
            again = await http.get(f"/pay/assets/{name}", headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
            stale = await http.get(f"/pay/assets/{name}", headers={"If-None-Match": '"old"'})
            assert stale.status_code == 200 and stale.content == response.content
        for unknown in ("page.html", "not_found.html", "..%2Fcheckout.py", "nothing.js"):
            assert (await http.get(f"/pay/assets/{unknown}")).status_code == 404
