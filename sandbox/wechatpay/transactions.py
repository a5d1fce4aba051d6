"""The WeChat Pay half's book: Native orders, the transactions that pay them, their refunds.

Unlike Alipay, an order exists at WeChat Pay from the moment it is placed: query finds it
NOTPAY and close closes it before any buyer has scanned its code. Refunds are asynchronous:
one is accepted PROCESSING and succeeds later (`complete_refund`), which is when its money goes
back and the merchant is told. Orders are immutable values replaced on every change, so what
the book hands out is a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sandbox.china_time import CHINA_TIME
from sandbox.notifier import TradeEvent
from sandbox.refusal import Refused

# A code_url stops working two hours after the order, whatever time_expire says.
CODE_URL_LIFETIME = timedelta(hours=2)


class TradeState(StrEnum):
    NOTPAY = "NOTPAY"
    SUCCESS = "SUCCESS"
    # Paid, and money has gone back on it.
    REFUND = "REFUND"
    CLOSED = "CLOSED"


class RefundStatus(StrEnum):
    # WeChat Pay's refunds also end CLOSED or ABNORMAL; the sandbox's always succeed.
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"


class ApiError(Refused):
    """A call WeChat Pay refuses: the HTTP status and `{"code", "message"}` it answers with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status

    @property
    def unknown(self) -> bool:
        return self.status == 404


def param_error(message: str) -> ApiError:
    return ApiError(400, "PARAM_ERROR", message)


def invalid_request(message: str) -> ApiError:
    """Well-formed, but against a business rule."""
    return ApiError(400, "INVALID_REQUEST", message)


def order_paid() -> ApiError:
    return ApiError(400, "ORDERPAID", "该订单已支付")


def order_closed() -> ApiError:
    return ApiError(400, "ORDERCLOSED", "订单已关闭")


def order_not_exist(out_trade_no: str) -> ApiError:
    return ApiError(404, "ORDER_NOT_EXIST", f"订单不存在: {out_trade_no}")


def resource_not_exists(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_EXISTS", message)


def code_expired() -> ApiError:
    # Not a WeChat Pay code: the buyer's app refuses a code_url past its expiry.
    return ApiError(400, "QR_CODE_EXPIRED", "the code has expired")


@dataclass(frozen=True)
class Payment:
    """What the buyer's payment made: WeChat Pay's transaction, and who paid."""

    transaction_id: str
    openid: str
    paid_at: datetime


@dataclass(frozen=True)
class Refund:
    out_refund_no: str
    refund_id: str
    amount: int
    notify_url: str | None
    created_at: datetime
    status: RefundStatus = RefundStatus.PROCESSING
    succeeded_at: datetime | None = None


@dataclass(frozen=True)
class Order:
    """A Native order; amounts are in fen, as WeChat Pay counts them."""

    appid: str
    mchid: str
    out_trade_no: str
    description: str
    total: int
    notify_url: str
    # The `pr` of its code_url: what the buyer's scan identifies the order by.
    token: str
    expires_at: datetime
    state: TradeState = TradeState.NOTPAY
    payment: Payment | None = None
    refunds: tuple[Refund, ...] = ()

    @property
    def refundable(self) -> int:
        # Refunds still processing hold their amount: WeChat Pay counts them as refunded.
        return self.total - sum(refund.amount for refund in self.refunds)

    def refund(self, out_refund_no: str) -> Refund:
        return next(r for r in self.refunds if r.out_refund_no == out_refund_no)


OnEvent = Callable[[Order, TradeEvent, Refund | None], None]


class OrderBook:
    """All orders of the sandbox's one WeChat Pay merchant, changed only under one lock.

    Reads take no lock: they only pick up immutable snapshots. `on_event` runs inside the
    lock, so merchants are told of changes in the order they happened.
    """

    def __init__(self, *, on_event: OnEvent, clock: Callable[[], datetime]) -> None:
        self._on_event = on_event
        self._clock = clock
        self._lock = asyncio.Lock()
        self._orders: dict[str, Order] = {}
        self._by_token: dict[str, str] = {}
        self._by_transaction: dict[str, str] = {}
        # out_refund_no -> out_trade_no: refund numbers are unique across the merchant.
        self._by_refund: dict[str, str] = {}
        self._refund_ids: set[str] = set()

    def get(self, out_trade_no: str) -> Order | None:
        return self._orders.get(out_trade_no)

    def by_token(self, token: str) -> Order | None:
        out_trade_no = self._by_token.get(token)
        return None if out_trade_no is None else self._orders[out_trade_no]

    def all(self) -> list[Order]:
        return list(self._orders.values())

    async def place(
        self,
        *,
        appid: str,
        mchid: str,
        out_trade_no: str,
        description: str,
        total: int,
        notify_url: str,
        expires_at: datetime | None,
    ) -> Order:
        """The order, new or the same one again: placing it twice alike is no second order."""
        async with self._lock:
            existing = self._orders.get(out_trade_no)
            if existing is not None:
                return _placed_again(existing, description, total, notify_url)
            latest = self._clock() + CODE_URL_LIFETIME
            order = Order(
                appid=appid,
                mchid=mchid,
                out_trade_no=out_trade_no,
                description=description,
                total=total,
                notify_url=notify_url,
                token=self._new_token(),
                expires_at=latest if expires_at is None else min(expires_at, latest),
            )
            self._by_token[order.token] = out_trade_no
            return self._store(order)

    async def query(self, out_trade_no: str) -> Order:
        async with self._lock:
            return self._existing(out_trade_no)

    async def scan(self, out_trade_no: str, *, honour_expiry: bool) -> Order:
        """The buyer opens the code_url: nothing changes, but an expired code says so."""
        async with self._lock:
            order = self._existing(out_trade_no)
            if order.state is TradeState.NOTPAY and honour_expiry and self._expired(order):
                raise code_expired()
            return order

    async def pay(self, out_trade_no: str, *, honour_expiry: bool) -> Order:
        async with self._lock:
            return self._pay(self._existing(out_trade_no), honour_expiry=honour_expiry)

    async def close(self, out_trade_no: str, *, buyer_pays_first: bool) -> Order:
        """Close an unpaid order; `buyer_pays_first` lets a payment win the race with the close."""
        async with self._lock:
            order = self._existing(out_trade_no)
            if buyer_pays_first and order.state is TradeState.NOTPAY:
                # The racing payment beat the merchant's deadline by a hair: expiry cannot stop it.
                order = self._pay(order, honour_expiry=False)
            if order.payment is not None:
                raise order_paid()
            if order.state is TradeState.CLOSED:
                return order
            return self._store(replace(order, state=TradeState.CLOSED))

    async def refund(
        self,
        *,
        transaction_id: str | None,
        out_trade_no: str | None,
        out_refund_no: str,
        amount: int,
        total: int,
        notify_url: str | None,
    ) -> tuple[Order, Refund, bool]:
        """The order, the refund, and whether it is new: one refund per out_refund_no."""
        async with self._lock:
            order = self._paid(transaction_id, out_trade_no)
            if total != order.total:
                raise invalid_request(f"amount.total {total} is not the order's {order.total}")
            earlier = self._by_refund.get(out_refund_no)
            if earlier is not None:
                return self._refunded_again(order, earlier, out_refund_no, amount)
            if amount > order.refundable:
                raise invalid_request(f"退款金额 {amount} 大于可退金额 {order.refundable}")
            now = self._clock()
            refund = Refund(
                out_refund_no=out_refund_no,
                refund_id=self._new_refund_id(now),
                amount=amount,
                notify_url=notify_url,
                created_at=now,
            )
            self._by_refund[out_refund_no] = order.out_trade_no
            self._refund_ids.add(refund.refund_id)
            order = self._store(replace(order, refunds=(*order.refunds, refund)))
            return order, refund, True

    async def complete_refund(self, out_refund_no: str) -> None:
        """The refund's money reaches the buyer: it succeeds and its merchant is told."""
        async with self._lock:
            order = self._orders[self._by_refund[out_refund_no]]
            refund = order.refund(out_refund_no)
            if refund.status is not RefundStatus.PROCESSING:
                return
            done = replace(refund, status=RefundStatus.SUCCESS, succeeded_at=self._clock())
            refunds = tuple(done if r is refund else r for r in order.refunds)
            order = self._store(replace(order, state=TradeState.REFUND, refunds=refunds))
            self._on_event(order, "refund", done)

    async def refund_query(self, out_refund_no: str) -> tuple[Order, Refund]:
        async with self._lock:
            out_trade_no = self._by_refund.get(out_refund_no)
            if out_trade_no is None:
                raise resource_not_exists(f"退款单不存在: {out_refund_no}")
            order = self._orders[out_trade_no]
            return order, order.refund(out_refund_no)

    def _existing(self, out_trade_no: str) -> Order:
        order = self._orders.get(out_trade_no)
        if order is None:
            raise order_not_exist(out_trade_no)
        return order

    def _paid(self, transaction_id: str | None, out_trade_no: str | None) -> Order:
        # WeChat Pay goes by transaction_id when both are given.
        if transaction_id:
            out_trade_no = self._by_transaction.get(transaction_id)
        order = self._orders.get(out_trade_no) if out_trade_no else None
        if order is None or order.payment is None:
            # One answer for both: an unpaid order has nothing to refund.
            raise resource_not_exists("订单不存在或未支付")
        return order

    def _refunded_again(
        self, order: Order, earlier: str, out_refund_no: str, amount: int
    ) -> tuple[Order, Refund, bool]:
        if earlier != order.out_trade_no:
            raise invalid_request(f"退款单号 {out_refund_no} 已用于订单 {earlier}")
        refund = order.refund(out_refund_no)
        if refund.amount != amount:
            raise invalid_request(
                f"退款单号 {out_refund_no} 的退款金额为 {refund.amount}, 不是 {amount}"
            )
        return order, refund, False

    def _pay(self, order: Order, *, honour_expiry: bool) -> Order:
        if order.state is TradeState.CLOSED:
            raise order_closed()
        if order.payment is not None:
            raise order_paid()
        if honour_expiry and self._expired(order):
            raise code_expired()
        now = self._clock()
        payment = Payment(
            transaction_id=self._new_transaction_id(now), openid=_openid(), paid_at=now
        )
        self._by_transaction[payment.transaction_id] = order.out_trade_no
        order = self._store(replace(order, state=TradeState.SUCCESS, payment=payment))
        self._on_event(order, "payment", None)
        return order

    def _expired(self, order: Order) -> bool:
        return self._clock() >= order.expires_at

    def _store(self, order: Order) -> Order:
        self._orders[order.out_trade_no] = order
        return order

    def _new_token(self) -> str:
        while True:
            token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(9))
            if token not in self._by_token:
                return token

    def _new_transaction_id(self, now: datetime) -> str:
        # WeChat Pay's shape: 28 digits with the China-time date in the middle.
        while True:
            transaction_id = f"4200000{_digits(3)}{now.astimezone(CHINA_TIME):%Y%m%d}{_digits(10)}"
            if transaction_id not in self._by_transaction:
                return transaction_id

    def _new_refund_id(self, now: datetime) -> str:
        # WeChat Pay's shape: 29 digits with the China-time date in the middle.
        while True:
            refund_id = f"503000{_digits(3)}{now.astimezone(CHINA_TIME):%Y%m%d}{_digits(12)}"
            if refund_id not in self._refund_ids:
                return refund_id


_TOKEN_ALPHABET = string.ascii_letters + string.digits
_OPENID_ALPHABET = string.ascii_letters + string.digits + "_-"


def _placed_again(existing: Order, description: str, total: int, notify_url: str) -> Order:
    if existing.state is TradeState.CLOSED:
        raise order_closed()
    if existing.payment is not None:
        raise order_paid()
    # time_expire is not compared: a merchant's retry may well compute it anew.
    if (existing.description, existing.total, existing.notify_url) != (
        description,
        total,
        notify_url,
    ):
        raise ApiError(403, "OUT_TRADE_NO_USED", "商户订单号重复: 同一订单号的下单参数不一致")
    return existing


def _openid() -> str:
    # The buyer as the merchant's app knows them: 28 characters beginning with "o".
    return "o" + "".join(secrets.choice(_OPENID_ALPHABET) for _ in range(27))


def _digits(count: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(count))
