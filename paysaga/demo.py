"""`paysaga demo`: drive a running `paysaga dev` through the order scenarios, over HTTP only.

Each scenario takes a fresh reservation, creates orders through the API, pays their QR codes
as the sandbox's buyer, waits for the sagas to settle, and checks what the API then says:

1. booking: a paid order (Alipay) makes the reservation active;
2. renewal: the next order of an active reservation (WeChat Pay) is a renewal and extends it;
3. two windows: a newer order (WeChat Pay) supersedes an open one (Alipay), whose late
   payment is refunded on Alipay;
4. timeout: an unpaid order expires, and paying its QR code afterwards is refunded.

It ends with the money per reservation: what was paid in less what went back must be what
the paid orders cost, in the API's view and at the gateway. Exit status: 0 when everything
went as expected, 1 when an expectation failed, 2 when the system could not be driven at all.

Errors:

    DemoError
     ├── KeyRefused         the API refused the key: no scenario can run
     └── UnexpectedAnswer   an endpoint answered outside its contract: the scenario stops
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.settings import Settings

# How long a saga may take to settle once it has all it needs: notification, refund, retries.
SETTLE_SECONDS = 30.0
POLL_SECONDS = 0.25
# Creating an order waits for the gateway's QR code (PAYSAGA_PAYMENT_CREATE_TIMEOUT_SECONDS).
API_TIMEOUT_SECONDS = 40.0
SANDBOX_TIMEOUT_SECONDS = 10.0
# Waiting out a longer payment timeout would make the demo a coffee break.
LONGEST_TIMEOUT_TO_WAIT_SECONDS = 60
ZERO = Decimal("0.00")
WIDER_THAN_ANY_TABLE = 10_000


class DemoError(Exception):
    """The demo could not go on as planned; the message says what answered what."""


class KeyRefused(DemoError):
    pass


class UnexpectedAnswer(DemoError):
    pass


class _Wire(BaseModel):
    # Only what the demo reads: the API may add fields without breaking it.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ApiPayment(_Wire):
    trade_no: str
    amount: Decimal
    status: str


class ApiRefund(_Wire):
    refund_no: str
    trade_no: str
    amount: Decimal
    status: str


class ApiOrder(_Wire):
    order_id: str
    reservation_id: str
    kind: str
    gateway: str
    status: str
    status_reason: str | None
    amount: Decimal
    created_at: datetime
    expires_at: datetime
    flagged: str | None
    payment: str
    qr_code: str | None
    checkout_url: str | None
    payments: list[ApiPayment]
    refunds: list[ApiRefund]

    @property
    def refunds_in_flight(self) -> bool:
        return any(refund.status == "pending" for refund in self.refunds)

    @property
    def payment_timeout_seconds(self) -> int:
        return round((self.expires_at - self.created_at).total_seconds())


class ApiOrderSummary(_Wire):
    order_id: str


class ApiReservation(_Wire):
    reservation_id: str
    status: str
    valid_until: datetime | None
    orders: list[ApiOrderSummary]


class GatewayTrade(_Wire):
    out_trade_no: str
    captured: Decimal
    refunded: Decimal


class GatewayLedger(_Wire):
    trades: list[GatewayTrade]


Model = TypeVar("Model", bound=_Wire)


class DemoClient:
    """The API as the business's app calls it, and the sandbox as a buyer and operator use it."""

    def __init__(self, *, api: httpx.Client, sandbox: httpx.Client) -> None:
        self.api = api
        self.sandbox = sandbox

    def create_order(
        self,
        reservation_id: str,
        *,
        days: int,
        gateway: str,
        step: str,
        payment: str = "immediate",
    ) -> ApiOrder:
        # Derived from the reservation and the step, so a retried POST would join its order
        # instead of opening a second payment window.
        headers = {"Idempotency-Key": f"{reservation_id}-{step}"}
        body = {
            "reservation_id": reservation_id,
            "days": days,
            "gateway": gateway,
            "payment": payment,
        }
        return _parse(_send(self.api, "POST", "/v1/orders", json=body, headers=headers), ApiOrder)

    def press_pay(self, order: ApiOrder) -> httpx.Response:
        """What the checkout page's Pay button sends: the page's token, no API key."""
        assert order.checkout_url is not None
        token = order.checkout_url.partition("?token=")[2]
        return self.api.post(
            f"/v1/orders/{order.order_id}/payment",
            headers={"Authorization": "", "X-Checkout-Token": token},
        )

    def order(self, order_id: str) -> ApiOrder:
        return _read(self.api, f"/v1/orders/{order_id}", ApiOrder)

    def reservation(self, reservation_id: str) -> ApiReservation:
        return _read(self.api, f"/v1/reservations/{reservation_id}", ApiReservation)

    def pay(self, order_id: str) -> None:
        """The buyer pays the order's QR code; the sandbox then notifies paysaga."""
        _send(self.sandbox, "POST", f"/sandbox/trades/{order_id}/pay")

    def ledger(self) -> GatewayLedger:
        return _read(self.sandbox, "/sandbox/ledger", GatewayLedger)

    @contextmanager
    def sandbox_faults(self, **faults: bool) -> Iterator[None]:
        _send(self.sandbox, "PUT", "/sandbox/faults", json=faults)
        try:
            yield
        finally:
            _send(self.sandbox, "DELETE", "/sandbox/faults")


def _read(client: httpx.Client, path: str, model: type[Model]) -> Model:
    return _parse(_send(client, "GET", path), model)


def _parse(answer: httpx.Response, model: type[Model]) -> Model:
    try:
        return model.model_validate_json(answer.content)
    except ValidationError as invalid:
        raise UnexpectedAnswer(
            f"{answer.request.method} {answer.request.url} answered no {model.__name__}: "
            f"{invalid.errors()[0]['msg']}"
        ) from None


def _send(client: httpx.Client, method: str, path: str, **options: Any) -> httpx.Response:
    try:
        answer = client.request(method, path, **options)
    except httpx.TimeoutException as timeout:
        raise UnexpectedAnswer(f"{method} {client.base_url}{path}: no answer ({timeout})") from None
    if answer.status_code == 401:
        raise KeyRefused(
            f"the API at {client.base_url} refused the key: run the demo with the same "
            "PAYSAGA_HOME as `paysaga dev`, or pass --api-key"
        )
    if answer.is_error:
        raise UnexpectedAnswer(
            f"{method} {answer.request.url} answered {answer.status_code}: {_detail(answer)}"
        )
    return answer


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("detail", answer.text))
    except ValueError:
        return answer.text[:200]


@dataclass(frozen=True)
class OrderRow:
    """One order as it ended, a line of the outcome table."""

    order_id: str
    reservation_id: str
    kind: str
    gateway: str
    amount: Decimal
    status: str
    payments: str
    refunds: str
    note: str

    HEADER: ClassVar[tuple[str, ...]] = (
        "order",
        "reservation",
        "kind",
        "gateway",
        "amount",
        "status",
        "payments",
        "refunds",
        "note",
    )

    @classmethod
    def of(cls, order: ApiOrder, *, note: str) -> OrderRow:
        reasons = [reason for reason in (order.status_reason, order.flagged) if reason]
        return cls(
            order_id=order.order_id,
            reservation_id=order.reservation_id,
            kind=order.kind,
            gateway=order.gateway,
            amount=order.amount,
            status=order.status,
            payments=", ".join(str(payment.amount) for payment in order.payments) or "-",
            refunds=_refunds_text(order),
            note="; ".join([note, *reasons]),
        )

    def cells(self) -> tuple[str, ...]:
        return (
            self.order_id,
            self.reservation_id,
            self.kind,
            self.gateway,
            str(self.amount),
            self.status,
            self.payments,
            self.refunds,
            self.note,
        )


def _refunds_text(order: ApiOrder) -> str:
    return ", ".join(f"{refund.amount} {refund.status}" for refund in order.refunds) or "-"


@dataclass(frozen=True)
class MoneyRow:
    """A reservation's money: paid in less refunded must be what its paid orders cost."""

    reservation_id: str
    paid_in: Decimal
    refunded: Decimal
    owed: Decimal
    gateway_net: Decimal

    HEADER: ClassVar[tuple[str, ...]] = (
        "reservation",
        "paid in",
        "refunded",
        "paid orders",
        "gateway net",
        "check",
    )

    @property
    def ok(self) -> bool:
        return self.paid_in - self.refunded == self.owed == self.gateway_net

    def cells(self) -> tuple[str, ...]:
        return (
            self.reservation_id,
            str(self.paid_in),
            str(self.refunded),
            str(self.owed),
            str(self.gateway_net),
            "OK" if self.ok else "MISMATCH",
        )


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """At the table's own width, never squeezed to the terminal's: an order id cut short is of
    no use, and a line too long for the terminal wraps whole."""
    table = Table(*header)
    for cells in rows:
        # Text, not markup: a reason from the API may hold brackets.
        table.add_row(*(Text(cell) for cell in cells))
    Console(width=WIDER_THAN_ANY_TABLE).print(table)


def new_reservation_id() -> str:
    return f"demo-{secrets.token_hex(4)}-room"


@dataclass
class Demo:
    client: DemoClient
    # Until an order shows the server's own, this process's setting is the best guess.
    payment_timeout_seconds: int
    timeout_seen_on_server: bool = False
    rows: list[OrderRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reservation_ids: list[str] = field(default_factory=list)

    def create_order(
        self,
        reservation_id: str,
        *,
        days: int,
        gateway: str,
        step: str,
        payment: str = "immediate",
    ) -> ApiOrder:
        order = self.client.create_order(
            reservation_id, days=days, gateway=gateway, step=step, payment=payment
        )
        if reservation_id not in self.reservation_ids:
            self.reservation_ids.append(reservation_id)
        if order.payment == "immediate":
            # `paysaga dev` may run with another PAYSAGA_PAYMENT_TIMEOUT_SECONDS than this
            # shell: the order's own expiry tells the timeout that counts.
            self.payment_timeout_seconds = order.payment_timeout_seconds
            self.timeout_seen_on_server = True
        return order

    def settled(self, order_id: str, status: str, *, within: float = SETTLE_SECONDS) -> ApiOrder:
        """The order once it has `status` and no refund in flight, or as last seen at the end."""
        deadline = time.monotonic() + within
        while True:
            order = self.client.order(order_id)
            if order.status == status and not order.refunds_in_flight:
                return order
            if time.monotonic() >= deadline:
                return order
            time.sleep(POLL_SECONDS)

    def expect(self, holds: bool, failure: str) -> bool:
        if not holds:
            self.failures.append(failure)
        return holds

    def finish(
        self, order: ApiOrder, *, scenario: str, kind: str, status: str, refunds: int = 0
    ) -> None:
        """Check how the order ended and add it to the table."""
        name = f"{scenario}: order {order.order_id}"
        self.expect(order.kind == kind, f"{name} is a {order.kind}, expected a {kind}")
        self.expect(order.status == status, f"{name} is {order.status}, expected {status}")
        succeeded = [refund for refund in order.refunds if refund.status == "succeeded"]
        self.expect(
            len(order.refunds) == len(succeeded) == refunds,
            f"{name} has refunds [{_refunds_text(order)}], expected {refunds} succeeded",
        )
        self.rows.append(OrderRow.of(order, note=scenario))


def booking_then_renewal(demo: Demo) -> None:
    reservation_id = new_reservation_id()
    booking = demo.create_order(reservation_id, days=3, gateway="alipay", step="booking")
    demo.client.pay(booking.order_id)
    demo.finish(
        demo.settled(booking.order_id, "paid"), scenario="1 booking", kind="booking", status="paid"
    )
    booked = demo.client.reservation(reservation_id)
    demo.expect(
        booked.status == "active",
        f"1 booking: reservation {reservation_id} is {booked.status}, expected active",
    )

    renewal = demo.create_order(reservation_id, days=2, gateway="wechatpay", step="renewal")
    demo.client.pay(renewal.order_id)
    demo.finish(
        demo.settled(renewal.order_id, "paid"), scenario="2 renewal", kind="renewal", status="paid"
    )
    renewed = demo.client.reservation(reservation_id)
    if booked.valid_until is not None:
        expected = booked.valid_until + timedelta(days=2)
        demo.expect(
            renewed.valid_until == expected,
            f"2 renewal: reservation {reservation_id} is valid until {renewed.valid_until}, "
            f"expected {expected}",
        )


def two_windows(demo: Demo) -> None:
    reservation_id = new_reservation_id()
    # An Alipay QR code nobody scanned can still be paid after its order is superseded.
    first = demo.create_order(reservation_id, days=1, gateway="alipay", step="window-1")
    second = demo.create_order(reservation_id, days=2, gateway="wechatpay", step="window-2")
    superseded = demo.settled(first.order_id, "superseded")
    demo.expect(
        superseded.status == "superseded",
        f"3 two windows: order {first.order_id} is {superseded.status} after a newer order, "
        "expected superseded",
    )
    # The buyer still had the first window open and pays both QR codes.
    demo.client.pay(first.order_id)
    demo.client.pay(second.order_id)
    demo.finish(
        demo.settled(second.order_id, "paid"),
        scenario="3 newer window paid",
        kind="booking",
        status="paid",
    )
    demo.finish(
        demo.settled(first.order_id, "refunded"),
        scenario="3 superseded window paid: refunded",
        kind="booking",
        status="refunded",
        refunds=1,
    )


def payment_timeout(demo: Demo) -> None:
    timeout = demo.payment_timeout_seconds
    if timeout > LONGEST_TIMEOUT_TO_WAIT_SECONDS:
        source = "" if demo.timeout_seen_on_server else " (this shell's setting)"
        print(
            f"  skipped: the payment timeout is {timeout} s{source}; to see orders expire, "
            "run `PAYSAGA_PAYMENT_TIMEOUT_SECONDS=10 paysaga dev`"
        )
        return
    print(f"  waiting {timeout} s for the payment timeout")
    reservation_id = new_reservation_id()
    order = demo.create_order(reservation_id, days=1, gateway="alipay", step="booking")
    expired = demo.settled(order.order_id, "expired", within=timeout + SETTLE_SECONDS)
    if not demo.expect(
        expired.status == "expired",
        f"4 timeout: order {order.order_id} is {expired.status} after the timeout, "
        "expected expired",
    ):
        demo.rows.append(OrderRow.of(expired, note="4 unpaid past the timeout"))
        return
    # The QR code has expired too; the fault lets the buyer pay it anyway, as a payment
    # racing the deadline would.
    with demo.client.sandbox_faults(accept_expired_qr=True):
        demo.client.pay(order.order_id)
    demo.finish(
        demo.settled(order.order_id, "refunded"),
        scenario="4 expired, then paid: refunded",
        kind="booking",
        status="refunded",
        refunds=1,
    )


def quote_then_pay(demo: Demo) -> None:
    reservation_id = new_reservation_id()
    stale = demo.create_order(
        reservation_id, days=2, gateway="wechatpay", step="quote-1", payment="deferred"
    )
    quote = demo.create_order(
        reservation_id, days=2, gateway="wechatpay", step="quote-2", payment="deferred"
    )
    print(f"  the buyer's checkout page: {quote.checkout_url}")
    # The first quote's page was left open; its Pay comes after a newer quote took over.
    refused = demo.client.press_pay(stale)
    demo.expect(
        refused.status_code == 409,
        f"5 quote: Pay on the superseded quote {stale.order_id} answered {refused.status_code}, "
        "expected 409",
    )
    print(f"  Pay on the stale page: {refused.status_code} {_detail(refused)}")
    pressed = demo.client.press_pay(quote)
    if not demo.expect(
        pressed.status_code == 200 and pressed.json()["qr_code"] is not None,
        f"5 quote: Pay on {quote.order_id} answered {pressed.status_code}: {_detail(pressed)}",
    ):
        return
    demo.client.pay(quote.order_id)
    demo.finish(
        demo.settled(quote.order_id, "paid"),
        scenario="5 quoted, then Pay pressed: paid",
        kind="booking",
        status="paid",
    )
    demo.finish(
        demo.settled(stale.order_id, "superseded"),
        scenario="5 stale quote: no QR code",
        kind="booking",
        status="superseded",
    )


SCENARIOS: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("1+2 booking, then renewal", booking_then_renewal),
    ("3 two payment windows", two_windows),
    ("4 payment timeout", payment_timeout),
    ("5 quote first, pay on submit", quote_then_pay),
)


def check_money(demo: Demo) -> list[MoneyRow]:
    """Each reservation's money, from the API's view and the gateway's; mismatches fail."""
    try:
        ledger = {trade.out_trade_no: trade for trade in demo.client.ledger().trades}
        rows = [
            _money_of(demo.client, reservation_id, ledger)
            for reservation_id in demo.reservation_ids
        ]
    except UnexpectedAnswer as answer:
        demo.failures.append(f"money check: stopped: {answer}")
        return []
    for row in rows:
        demo.expect(row.ok, f"the money of reservation {row.reservation_id} does not add up")
    return rows


def _money_of(client: DemoClient, reservation_id: str, ledger: dict[str, GatewayTrade]) -> MoneyRow:
    order_ids = [order.order_id for order in client.reservation(reservation_id).orders]
    return money_row(reservation_id, [client.order(order_id) for order_id in order_ids], ledger)


def money_row(
    reservation_id: str, orders: Sequence[ApiOrder], ledger: Mapping[str, GatewayTrade]
) -> MoneyRow:
    """A reservation's money, from all its orders as the API shows them and from the gateway's
    ledger (its paid trades by out_trade_no)."""
    trades = [ledger[order.order_id] for order in orders if order.order_id in ledger]
    return MoneyRow(
        reservation_id=reservation_id,
        paid_in=sum((p.amount for o in orders for p in o.payments), ZERO),
        refunded=sum(
            (r.amount for o in orders for r in o.refunds if r.status == "succeeded"), ZERO
        ),
        owed=sum((o.amount for o in orders if o.status == "paid"), ZERO),
        gateway_net=sum((t.captured - t.refunded for t in trades), ZERO),
    )


def existing_api_key(settings: Settings) -> str | None:
    """A key the API takes, found without making one (a new dev key would be refused)."""
    if settings.api_key_list:
        return settings.api_key_list[0]
    path = settings.dev_api_key_file
    return path.read_text().strip() if path.exists() else None


def run_demo(settings: Settings, *, api_url: str | None, api_key: str | None) -> int:
    api_url = api_url or settings.public_base_url
    key = api_key or existing_api_key(settings)
    if key is None:
        print(
            f"paysaga demo: no API key: none in PAYSAGA_API_KEYS, and no dev key at "
            f"{settings.dev_api_key_file}; run it with the PAYSAGA_HOME of `paysaga dev`, "
            "or pass --api-key",
            file=sys.stderr,
        )
        return 2
    api = httpx.Client(
        base_url=api_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=API_TIMEOUT_SECONDS,
    )
    sandbox = httpx.Client(base_url=settings.sandbox_url, timeout=SANDBOX_TIMEOUT_SECONDS)
    with api, sandbox:
        demo = Demo(DemoClient(api=api, sandbox=sandbox), settings.payment_timeout_seconds)
        print(f"paysaga demo against {api_url} (sandbox {settings.sandbox_url})")
        try:
            _run_scenarios(demo)
            money = check_money(demo)
        except httpx.ConnectError as refused:
            print(
                f"paysaga demo: cannot connect to {refused.request.url.copy_with(path='/')}: "
                "is `paysaga dev` running?",
                file=sys.stderr,
            )
            return 2
        except KeyRefused as refusal:
            print(f"paysaga demo: {refusal}", file=sys.stderr)
            return 2
    _report(demo, money)
    return 1 if demo.failures else 0


def _run_scenarios(demo: Demo) -> None:
    for title, scenario in SCENARIOS:
        print(f"scenario {title}", flush=True)
        try:
            scenario(demo)
        except UnexpectedAnswer as answer:
            demo.failures.append(f"{title}: stopped: {answer}")


def _report(demo: Demo, money: list[MoneyRow]) -> None:
    for header, rows in (
        (OrderRow.HEADER, [row.cells() for row in demo.rows]),
        (MoneyRow.HEADER, [row.cells() for row in money]),
    ):
        if rows:
            print()
            print_table(header, rows)
    print()
    if not demo.failures:
        print("every scenario ended as expected")
        return
    print(f"{len(demo.failures)} expectation(s) failed:")
    for failure in demo.failures:
        print(f"  - {failure}")
