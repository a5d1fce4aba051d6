"""The chaos drill's verdict: once every order has settled, nothing lost, by our books (the API's
views of every order) and by the sandbox's (its trades and its ledger).

- every order a POST was answered with exists, and no other (a 503 made nothing);
- no order pending past its deadline, none flagged for an operator;
- no payment left received or refunding, no refund pending or failed;
- every captured payment paid its order (one per paid order, of its amount) or was refunded;
- no trade refunded twice, by either books, nor refunded more than it captured;
- every payment the sandbox captured is in our books, and refunded as much by both;
- for every reservation, captured − refunded = the amounts of its paid orders, by both books.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from benchmarks.chaos_load import App
from paysaga.demo import ApiOrder, GatewayLedger, GatewayTrade, money_row

READS_AT_ONCE = 16
POLL_SECONDS = 2.0
UNSETTLED_PAYMENTS = ("received", "refunding")
T = TypeVar("T")


class SandboxRefund(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    out_request_no: str
    refund_amount: Decimal


class SandboxTrade(BaseModel):
    """A trade as `GET /sandbox/trades` shows it: only what the checks read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    gateway: str
    out_trade_no: str
    trade_no: str | None
    total_amount: Decimal
    refunded_amount: Decimal
    refunds: list[SandboxRefund]


@dataclass(frozen=True)
class Books:
    orders: dict[str, ApiOrder]
    # Each reservation's orders, as the API lists them.
    reservations: dict[str, list[str]]
    # The sandbox's paid trades, and all its trades, by our order id.
    ledger: dict[str, GatewayTrade]
    trades: dict[str, SandboxTrade]


def settled(order: ApiOrder) -> bool:
    return (
        order.status != "pending"
        and all(refund.status != "pending" for refund in order.refunds)
        and all(payment.status not in UNSETTLED_PAYMENTS for payment in order.payments)
    )


async def settle(app: App, *, seconds: float) -> None:
    """Wait until every order has settled and every payment a buyer made is in our books, for
    `seconds` at most; what has not by then, the checks report."""
    deadline = time.monotonic() + seconds
    waiting = sorted(app.told)
    while True:
        orders = await _gathered(app.order(order_id) for order_id in waiting)
        waiting = [
            order.order_id
            for order in orders
            if not settled(order) or (order.order_id in app.paid_by_buyer and not order.payments)
        ]
        if not waiting:
            app.journal.note("every order settled")
            return
        if time.monotonic() > deadline:
            app.journal.note(f"{len(waiting)} order(s) not settled after {seconds:.0f} s")
            return
        await asyncio.sleep(POLL_SECONDS)


async def read_books(app: App) -> Books:
    reservation_ids = sorted(set(app.told.values()))
    views = await _gathered(app.reservation(reservation_id) for reservation_id in reservation_ids)
    reservations = {
        reservation_id: [order["order_id"] for order in view["orders"]]
        for reservation_id, view in zip(reservation_ids, views, strict=True)
    }
    order_ids = sorted({order_id for ids in reservations.values() for order_id in ids})
    orders = await _gathered(app.order(order_id) for order_id in order_ids)
    sandbox = app.system.sandbox_url
    ledger = GatewayLedger.model_validate_json(
        (await app.http.get(f"{sandbox}/sandbox/ledger")).content
    )
    trades = (await app.http.get(f"{sandbox}/sandbox/trades")).json()
    return Books(
        orders={order.order_id: order for order in orders},
        reservations=reservations,
        ledger={line.out_trade_no: line for line in ledger.trades},
        trades={
            trade.out_trade_no: trade
            for trade in (SandboxTrade.model_validate(view) for view in trades)
        },
    )


def check(app: App, books: Books) -> list[str]:
    """Every violation of what the drill promises, in words."""
    return [
        *_orders_told(app, books),
        *(
            violation
            for order in books.orders.values()
            for violation in (*_order_ended(order), *_money_of_order(order))
        ),
        *_money_of_reservations(books),
        *_gateways_books(books),
    ]


def _orders_told(app: App, books: Books) -> Iterator[str]:
    for reservation_id, order_ids in books.reservations.items():
        for order_id in order_ids:
            if order_id not in app.told:
                yield f"order {order_id} of {reservation_id} exists; no POST was answered with it"
    for order_id, reservation_id in app.told.items():
        if order_id not in books.orders:
            yield f"order {order_id} was answered to a POST, but {reservation_id} has no such order"


def _order_ended(order: ApiOrder) -> Iterator[str]:
    name = f"order {order.order_id} ({order.gateway}, {order.status})"
    now = datetime.now(UTC)
    if order.status == "pending" and order.expires_at < now:
        late = (now - order.expires_at).total_seconds()
        yield f"{name} is pending {late:.0f} s past its deadline"
    if order.flagged:
        yield f"{name} is flagged for an operator: {order.flagged}"


def _money_of_order(order: ApiOrder) -> Iterator[str]:
    name = f"order {order.order_id} ({order.gateway}, {order.status})"
    for payment in order.payments:
        if payment.status in UNSETTLED_PAYMENTS or payment.status == "refund_failed":
            yield f"{name}: payment {payment.trade_no} left {payment.status}"
    accepted = [payment for payment in order.payments if payment.status == "accepted"]
    if order.status == "paid" and [p.amount for p in accepted] != [order.amount]:
        yield f"{name} is paid by {[str(p.amount) for p in accepted]} accepted payment(s)"
    if order.status != "paid" and accepted:
        yield f"{name} kept payment(s) {[p.trade_no for p in accepted]}"
    for refund in order.refunds:
        if refund.status != "succeeded":
            yield f"{name}: refund {refund.refund_no} left {refund.status}"
    refunded = Counter(refund.trade_no for refund in order.refunds if refund.status == "succeeded")
    for trade_no, times in refunded.items():
        if times > 1:
            yield f"{name}: trade {trade_no} refunded {times} times by our books"


def _money_of_reservations(books: Books) -> Iterator[str]:
    for reservation_id, order_ids in books.reservations.items():
        orders = [books.orders[order_id] for order_id in order_ids]
        row = money_row(reservation_id, orders, books.ledger)
        if not row.ok:
            yield (
                f"the money of {reservation_id} does not add up: captured {row.paid_in} − "
                f"refunded {row.refunded} by our books, paid orders {row.owed}, "
                f"net {row.gateway_net} at the sandbox"
            )


def _gateways_books(books: Books) -> Iterator[str]:
    for order_id, trade in books.trades.items():
        name = f"sandbox trade {trade.trade_no} of order {order_id} ({trade.gateway})"
        if len(trade.refunds) > 1:
            yield f"{name} was refunded {len(trade.refunds)} times"
        if trade.refunded_amount > trade.total_amount:
            yield f"{name} refunded {trade.refunded_amount} of {trade.total_amount}"
        if order_id not in books.ledger:
            continue
        order = books.orders.get(order_id)
        if order is None:
            yield f"{name} captured {trade.total_amount} for an order our books do not hold"
            continue
        if trade.trade_no not in {payment.trade_no for payment in order.payments}:
            yield f"{name} captured {trade.total_amount}; our books have no such payment"
        ours = sum((r.amount for r in order.refunds if r.status == "succeeded"), Decimal(0))
        if ours != trade.refunded_amount:
            yield f"{name} refunded {trade.refunded_amount}; by our books {ours}"


async def _gathered(reads: Iterable[Awaitable[T]]) -> list[T]:
    """Every read's answer, in order, a few at a time."""
    gate = asyncio.Semaphore(READS_AT_ONCE)

    async def read(awaitable: Awaitable[T]) -> T:
        async with gate:
            return await awaitable

    return list(await asyncio.gather(*(read(awaitable) for awaitable in reads)))
