"""The hosted checkout page: where a business sends its buyer to pay an order (`checkout_url`).

- `GET /pay/{order_id}?token=…`: the page. What is paid (reservation, kind, days), the amount
  as text, the gateway, the QR code, a countdown to the deadline, and the status, kept live.
- `GET /pay/{order_id}/state?token=…`: what the page shows, as JSON (`CheckoutState`); the page
  polls it when server-sent events do not get through.
- `GET /pay/{order_id}/events?token=…`: the same as server-sent events, one at once and then one
  whenever it changes. Each stream reads the order from the database every second, so whichever
  API process serves it sees what every worker and API did; comments keep it alive through
  proxies, and a final status ends it.
- `GET /pay/{order_id}/qr.svg?token=…`: the QR code, drawn here (segno), while it may be paid.
- `GET /pay/assets/{name}`: the page's stylesheet, script and icon. Nothing comes from elsewhere.

A deferred order's page has a Pay button instead of a QR code until the buyer presses it: it
calls `POST /v1/orders/{order_id}/payment` with the token as `X-Checkout-Token`.

The token, not the order id, opens an order's pages: an unknown order, a wrong or missing token
and an order made before pages existed all get the same 404, and tokens are compared in
constant time. Every answer allows scripts, styles, images and connections from here only, no
framing, and sends no Referer: the token is in the page's URL and must not follow the buyer to
the wallet or the return page.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from string import Template
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

import segno
from fastapi import APIRouter, Header
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from api.deps import State
from api.problems import ApiProblem
from api.schemas import is_plain_id
from core.money import format_amount
from core.vocabulary import GATEWAY_NAMES, Gateway, OrderKind, OrderStatus, PaymentTiming
from store import orders
from store.db import transaction
from store.models import Order
from store.views import opens_checkout

router = APIRouter(prefix="/pay", include_in_schema=False)

POLL_SECONDS = 1.0
KEEP_ALIVE_SECONDS = 15.0
# uvicorn's drain on SIGTERM waits for every answer in flight, a stream too: each one ends
# within what a drain has (30 s of grace less the 5 s preStop), and EventSource comes back on
# its own after RECONNECT_MILLISECONDS, to whichever process then serves it.
STREAM_SECONDS = 20.0
RECONNECT_MILLISECONDS = 1000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# Pages and states hold the token and change as the order does.
PRIVATE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
NOT_FOUND = "no such checkout page: the link is wrong or incomplete"
KIND_NAMES = {OrderKind.BOOKING: "Booking", OrderKind.RENEWAL: "Renewal"}

Phase = Literal[
    "preparing",
    "quote",
    "scan",
    "overdue",
    "paid",
    "superseded",
    "expired",
    "cancelled",
    "refunded",
]


class CheckoutState(BaseModel):
    """What the page shows of its order: the state route's answer and each event's data."""

    status: OrderStatus
    # `quote`: a deferred order's price, payable by pressing Pay; `scan`: its QR code, until the
    # deadline; `overdue`: past it, still pending while the saga asks the gateway and closes.
    phase: Phase
    # One sentence for the buyer; screen readers read it out as it changes.
    message: str
    # The QR code's image, relative to the page, while it may be paid.
    qr_image: str | None
    # What the QR code holds, when a phone's browser can open it (a web link to the wallet).
    pay_link: str | None
    # When the quote lapses or the time to pay is up (an operator may move it), and the seconds
    # until then: the countdown, free of the phone's clock.
    expires_at: datetime | None
    seconds_left: int | None
    # Where the page sends the buyer once paid.
    return_url: str | None
    # Nothing will change any more: the stream ends and the page stops listening.
    final: bool

    def differs_from(self, other: CheckoutState) -> bool:
        """A change the page must hear of: the countdown alone is not one."""
        return self.model_dump(exclude={"seconds_left"}) != other.model_dump(
            exclude={"seconds_left"}
        )


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, media_type, etag='"' + hashlib.sha256(body).hexdigest()[:16] + '"')


_FILES = files("api") / "checkout_page"
ASSETS = {
    name: _asset((_FILES / name).read_bytes(), media_type)
    for name, media_type in (
        ("checkout.css", "text/css; charset=utf-8"),
        ("checkout.js", "text/javascript; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    )
}
PAGE = Template((_FILES / "page.html").read_text(encoding="utf-8"))
NOT_FOUND_PAGE = (_FILES / "not_found.html").read_text(encoding="utf-8")


@router.get("/assets/{name}")
def asset(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    found = ASSETS.get(name)
    if found is None:
        raise ApiProblem(404, f"no asset {name!r}", headers=SECURITY_HEADERS)
    # Revalidated each time (they are small): a page after a release never runs an older script.
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": found.etag}
    if if_none_match == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@router.get("/{order_id}", response_class=HTMLResponse)
def page(order_id: str, state: State, token: str = "") -> HTMLResponse:
    with transaction(state.engine) as session:
        order = opened_order(session, order_id, token)
        if order is None:
            return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=PRIVATE_HEADERS)
        shown = checkout_state(order, token=token, now=datetime.now(UTC))
        return HTMLResponse(_page(order, shown, token), headers=PRIVATE_HEADERS)


@router.get("/{order_id}/state")
def state_now(order_id: str, state: State, token: str = "") -> Response:
    shown = _state(state.engine, order_id, token)
    return Response(shown.model_dump_json(), media_type="application/json", headers=PRIVATE_HEADERS)


@router.get("/{order_id}/events")
async def events(order_id: str, state: State, token: str = "") -> StreamingResponse:
    # Read before the answer starts, so that a link that opens nothing is a 404, which
    # EventSource does not retry.
    first = await asyncio.to_thread(_state, state.engine, order_id, token)
    return StreamingResponse(
        _events(state.engine, order_id, token, first),
        media_type="text/event-stream",
        # nginx would hold the events back in its buffer otherwise.
        headers={**PRIVATE_HEADERS, "X-Accel-Buffering": "no"},
    )


@router.get("/{order_id}/qr.svg")
def qr_image(order_id: str, state: State, token: str = "") -> Response:
    with transaction(state.engine) as session:
        order = opened_order(session, order_id, token)
    if order is None or order.qr_code is None:
        raise _not_found()
    # Only while it may be paid: a page left open, or its image's address, shows no code that
    # can no longer pay the order.
    if checkout_state(order, token=token, now=datetime.now(UTC)).qr_image is None:
        raise _not_found()
    svg = io.BytesIO()
    segno.make(order.qr_code, micro=False).save(
        svg,
        kind="svg",
        # A white quiet zone of four modules, as scanners need, on any page background.
        border=4,
        dark="#000",
        light="#fff",
        title=_qr_alt(order),
        # A viewBox and no size: the page sizes it.
        omitsize=True,
        xmldecl=False,
    )
    return Response(svg.getvalue(), media_type="image/svg+xml", headers=PRIVATE_HEADERS)


def opened_order(session: Session, order_id: str, token: str) -> Order | None:
    """The order this link opens: None for an unknown order, a missing or wrong token, or an
    order without one, alike."""
    order = orders.get_order(session, order_id) if is_plain_id(order_id) else None
    if order is None or not token or not opens_checkout(order, token):
        return None
    return order


def checkout_state(order: Order, *, token: str, now: datetime) -> CheckoutState:
    phase, message = _phase(order, now)
    scan = phase == "scan"
    counting = phase in ("scan", "quote")
    return CheckoutState(
        status=OrderStatus(order.status),
        phase=phase,
        message=message,
        qr_image=f"{order.id}/qr.svg?token={quote(token, safe='')}" if scan else None,
        pay_link=order.qr_code if scan and _opens_in_a_browser(order.qr_code) else None,
        expires_at=order.expires_at if counting else None,
        seconds_left=max(0, int((order.expires_at - now).total_seconds())) if counting else None,
        return_url=order.return_url if phase == "paid" else None,
        final=order.status != OrderStatus.PENDING,
    )


def _phase(order: Order, now: datetime) -> tuple[Phase, str]:
    amount, gateway = _amount(order), _gateway(order)
    match OrderStatus(order.status):
        case OrderStatus.PAID:
            return "paid", f"Paid: {amount} received through {gateway}. Thank you!"
        case OrderStatus.SUPERSEDED:
            return "superseded", (
                "A newer order for this reservation replaced this one, so this one can no "
                "longer be paid. Return to the shop to pay the newer order."
            )
        case OrderStatus.EXPIRED:
            return "expired", "This order expired before it was paid. It can no longer be paid."
        case OrderStatus.CANCELLED:
            return "cancelled", "This order was cancelled. It can no longer be paid."
        case OrderStatus.REFUNDED:
            return "refunded", "This order can no longer be paid: its payment was refunded."
    if now >= order.expires_at:
        if order.qr_code is None:
            return "overdue", (
                "This price has lapsed and can no longer be paid. Return to the shop for a new one."
            )
        return "overdue", "The time to pay is up. Checking whether a payment came in…"
    if order.qr_code is not None:
        return "scan", f"Scan the QR code with {gateway} to pay {amount}."
    if order.payment == PaymentTiming.DEFERRED:
        return "quote", f"Press Pay to get a QR code for {amount}, to scan with {gateway}."
    # Sagas from before deferred payment claimed the order before making its payment.
    return "preparing", "The payment is being prepared…"


def _opens_in_a_browser(qr_code: str | None) -> bool:
    # Alipay's codes are https links that open its app from a phone's browser; WeChat Pay's
    # Native codes (weixin://…) pay only when scanned.
    return qr_code is not None and urlsplit(qr_code).scheme in ("https", "http")


def _state(engine: Engine, order_id: str, token: str) -> CheckoutState:
    with transaction(engine) as session:
        order = opened_order(session, order_id, token)
        if order is None:
            raise _not_found()
        return checkout_state(order, token=token, now=datetime.now(UTC))


async def _events(
    engine: Engine, order_id: str, token: str, first: CheckoutState
) -> AsyncIterator[str]:
    clock = asyncio.get_running_loop().time
    started = quiet_since = clock()
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n" + _event(first)
    shown = first
    while not shown.final and clock() - started < STREAM_SECONDS:
        await asyncio.sleep(POLL_SECONDS)
        try:
            now = await asyncio.to_thread(_state, engine, order_id, token)
        except SQLAlchemyError:
            # The database is away: the page reconnects, and gets a 503 until it is back.
            return
        if now.differs_from(shown):
            yield _event(now)
            shown, quiet_since = now, clock()
        elif clock() - quiet_since >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = clock()


def _event(state: CheckoutState) -> str:
    return f"data: {state.model_dump_json()}\n\n"


def _page(order: Order, shown: CheckoutState, token: str) -> str:
    token_query = f"token={quote(token, safe='')}"
    values = {
        "amount": _amount(order),
        "reservation": order.reservation_id,
        "kind": KIND_NAMES[OrderKind(order.kind)],
        "days": f"{order.days} day" if order.days == 1 else f"{order.days} days",
        "gateway": _gateway(order),
        "message": shown.message,
        "qr_src": shown.qr_image or "",
        "qr_hidden": "" if shown.qr_image else "hidden",
        "qr_alt": _qr_alt(order),
        # Relative to the page, so that the page works under any PUBLIC_BASE_URL path.
        "state_url": f"{order.id}/state?{token_query}",
        "events_url": f"{order.id}/events?{token_query}",
        "payment_url": f"../v1/orders/{order.id}/payment",
        "token": token,
        "state": shown.model_dump_json(),
    }
    return PAGE.substitute({name: html.escape(value) for name, value in values.items()})


def _qr_alt(order: Order) -> str:
    return f"QR code to scan with {_gateway(order)} to pay {_amount(order)}"


def _amount(order: Order) -> str:
    return f"{format_amount(order.amount_cents)} {order.currency}"


def _gateway(order: Order) -> str:
    return GATEWAY_NAMES[Gateway(order.gateway)]


def _not_found() -> ApiProblem:
    return ApiProblem(404, NOT_FOUND, headers=PRIVATE_HEADERS)
