"""The Alipay half's trade book: what Alipay knows about each QR code and the trade behind it.

A precreate only registers a QR code; the trade itself comes into being when the buyer scans
it, which is why query and close answer ACQ.TRADE_NOT_EXIST until then — and why the QR code
can still be paid after such a close. Trades are immutable values replaced on every change,
so what the book hands out is a consistent snapshot.

Unlike Alipay, the book does not close a scanned trade left unpaid past its expiry: it stays
WAIT_BUYER_PAY, though the buyer can no longer pay it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sandbox.china_time import CHINA_TIME
from sandbox.notifier import TradeEvent
from sandbox.refusal import Refused

# Alipay stops accepting a precreated QR code after two hours, whatever expiry was asked for.
QR_LIFETIME = timedelta(hours=2)

TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
TRADE_STATUS_ERROR = "ACQ.TRADE_STATUS_ERROR"
TRADE_HAS_SUCCESS = "ACQ.TRADE_HAS_SUCCESS"
TRADE_HAS_CLOSE = "ACQ.TRADE_HAS_CLOSE"
TRADE_HAS_FINISHED = "ACQ.TRADE_HAS_FINISHED"
CONTEXT_INCONSISTENT = "ACQ.CONTEXT_INCONSISTENT"
REFUND_AMT_NOT_EQUAL_TOTAL = "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
DISCORDANT_REPEAT_REQUEST = "ACQ.DISCORDANT_REPEAT_REQUEST"
# Not an Alipay code: the buyer's app refuses a QR code past its expiry.
QR_CODE_EXPIRED = "QR_CODE_EXPIRED"


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    TRADE_SUCCESS = "TRADE_SUCCESS"
    TRADE_FINISHED = "TRADE_FINISHED"
    TRADE_CLOSED = "TRADE_CLOSED"


# Unscanned QR codes and trades waiting for the buyer: what a buyer can still pay.
_PAYABLE = (None, TradeStatus.WAIT_BUYER_PAY)


class TradeRefused(Refused):
    """A trade rule refuses the operation; `code` is Alipay's sub_code for the rule."""

    @property
    def unknown(self) -> bool:
        return self.code == TRADE_NOT_EXIST


@dataclass(frozen=True)
class Scan:
    """What the buyer's scan created: the trade at Alipay and who the buyer is."""

    trade_no: str
    buyer_id: str
    buyer_logon_id: str
    created_at: datetime


@dataclass(frozen=True)
class Refund:
    out_request_no: str
    amount: Decimal
    refunded_at: datetime


@dataclass(frozen=True)
class Trade:
    out_trade_no: str
    total_amount: Decimal
    subject: str
    notify_url: str | None
    precreated_at: datetime
    expires_at: datetime
    scan: Scan | None = None
    status: TradeStatus | None = None
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    refunds: tuple[Refund, ...] = ()

    @property
    def refunded_amount(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), Decimal("0.00"))

    def require_scan(self) -> Scan:
        if self.scan is None:
            raise TradeRefused(TRADE_NOT_EXIST, f"trade {self.out_trade_no} was never scanned")
        return self.scan

    def refund_for(self, out_request_no: str) -> Refund | None:
        return next((r for r in self.refunds if r.out_request_no == out_request_no), None)


OnEvent = Callable[[Trade, TradeEvent, Refund | None], None]


class TradeBook:
    """All trades of the sandbox's one merchant, changed only under one lock.

    Reads take no lock: they only pick up immutable snapshots. `on_event` runs inside the
    lock, so merchants are told of changes in the order they happened (a refund's
    notification is never created before its payment's).
    """

    def __init__(self, *, on_event: OnEvent, clock: Callable[[], datetime]) -> None:
        self._on_event = on_event
        self._clock = clock
        self._lock = asyncio.Lock()
        self._trades: dict[str, Trade] = {}
        self._out_trade_nos: dict[str, str] = {}

    def get(self, out_trade_no: str) -> Trade | None:
        return self._trades.get(out_trade_no)

    def all(self) -> list[Trade]:
        return list(self._trades.values())

    async def precreate(
        self,
        *,
        out_trade_no: str,
        total_amount: Decimal,
        subject: str,
        notify_url: str | None,
        expires_at: datetime | None,
    ) -> Trade:
        """The QR code for `out_trade_no`; asking again with the same amount gives the same one."""
        async with self._lock:
            existing = self._trades.get(out_trade_no)
            if existing is not None:
                return _precreate_again(existing, total_amount)
            now = self._clock()
            latest = now + QR_LIFETIME
            trade = Trade(
                out_trade_no=out_trade_no,
                total_amount=total_amount,
                subject=subject,
                notify_url=notify_url,
                precreated_at=now,
                expires_at=latest if expires_at is None else min(expires_at, latest),
            )
            self._trades[out_trade_no] = trade
            return trade

    async def scan(self, out_trade_no: str, *, honour_expiry: bool) -> Trade:
        async with self._lock:
            return self._scan(self._precreated(out_trade_no), honour_expiry=honour_expiry)

    async def pay(self, out_trade_no: str, *, honour_expiry: bool) -> Trade:
        async with self._lock:
            return self._pay(self._precreated(out_trade_no), honour_expiry=honour_expiry)

    async def finish(self, out_trade_no: str) -> Trade:
        """The refund window has passed: Alipay's TRADE_FINISHED, refundable no more."""
        async with self._lock:
            trade = self._precreated(out_trade_no)
            if trade.status is not TradeStatus.TRADE_SUCCESS:
                raise TradeRefused(TRADE_STATUS_ERROR, f"a {trade.status} trade cannot finish")
            trade = self._store(replace(trade, status=TradeStatus.TRADE_FINISHED))
            self._on_event(trade, "finish", None)
            return trade

    async def query(self, *, out_trade_no: str | None, trade_no: str | None) -> Trade:
        async with self._lock:
            return self._existing(out_trade_no, trade_no)

    async def close(
        self, *, out_trade_no: str | None, trade_no: str | None, buyer_pays_first: bool
    ) -> Trade:
        """Close an unpaid trade; `buyer_pays_first` lets a payment win the race with the close."""
        async with self._lock:
            found = self._lookup(out_trade_no, trade_no)
            if buyer_pays_first and found is not None and found.status in _PAYABLE:
                # The racing payment beat the merchant's deadline by a hair: expiry cannot stop it.
                self._pay(found, honour_expiry=False)
            trade = self._existing(out_trade_no, trade_no)
            if trade.status is not TradeStatus.WAIT_BUYER_PAY:
                raise TradeRefused(TRADE_STATUS_ERROR, f"a {trade.status} trade cannot be closed")
            now = self._clock()
            return self._store(replace(trade, status=TradeStatus.TRADE_CLOSED, closed_at=now))

    async def refund(
        self,
        *,
        out_trade_no: str | None,
        trade_no: str | None,
        amount: Decimal,
        out_request_no: str | None,
    ) -> tuple[Trade, Refund, bool]:
        """The trade, the refund, and whether money moved now (Alipay's fund_change)."""
        async with self._lock:
            trade = self._existing(out_trade_no, trade_no)
            # Without out_request_no Alipay files the refund under the out_trade_no.
            request_no = out_request_no or trade.out_trade_no
            earlier = trade.refund_for(request_no)
            if earlier is not None:
                if earlier.amount != amount:
                    raise TradeRefused(
                        DISCORDANT_REPEAT_REQUEST,
                        f"refund {request_no} was for {earlier.amount}, not {amount}",
                    )
                return trade, earlier, False
            _check_refundable(trade, amount, full_only=out_request_no is None)
            now = self._clock()
            refund = Refund(out_request_no=request_no, amount=amount, refunded_at=now)
            trade = replace(trade, refunds=(*trade.refunds, refund))
            if trade.refunded_amount == trade.total_amount:
                trade = replace(trade, status=TradeStatus.TRADE_CLOSED, closed_at=now)
            trade = self._store(trade)
            self._on_event(trade, "refund", refund)
            return trade, refund, True

    async def refund_query(
        self, *, out_trade_no: str | None, trade_no: str | None, out_request_no: str
    ) -> tuple[Trade, Refund | None]:
        async with self._lock:
            trade = self._existing(out_trade_no, trade_no)
            return trade, trade.refund_for(out_request_no)

    def _precreated(self, out_trade_no: str) -> Trade:
        trade = self._trades.get(out_trade_no)
        if trade is None:
            raise TradeRefused(TRADE_NOT_EXIST, f"no QR code was precreated for {out_trade_no}")
        return trade

    def _lookup(self, out_trade_no: str | None, trade_no: str | None) -> Trade | None:
        # Alipay goes by trade_no when both are given.
        if trade_no:
            out_trade_no = self._out_trade_nos.get(trade_no)
        return self._trades.get(out_trade_no) if out_trade_no else None

    def _existing(self, out_trade_no: str | None, trade_no: str | None) -> Trade:
        """A trade Alipay would admit exists: one whose QR code has been scanned."""
        trade = self._lookup(out_trade_no, trade_no)
        if trade is None or trade.scan is None:
            raise TradeRefused(TRADE_NOT_EXIST, "交易不存在")
        return trade

    def _scan(self, trade: Trade, *, honour_expiry: bool) -> Trade:
        if trade.scan is not None:
            return trade
        now = self._clock()
        if honour_expiry and now >= trade.expires_at:
            raise TradeRefused(QR_CODE_EXPIRED, "the QR code has expired")
        scan = Scan(
            trade_no=self._new_trade_no(now),
            buyer_id="2088" + _digits(12),
            buyer_logon_id=f"1{_digits(2)}****{_digits(4)}",
            created_at=now,
        )
        return self._store(replace(trade, scan=scan, status=TradeStatus.WAIT_BUYER_PAY))

    def _pay(self, trade: Trade, *, honour_expiry: bool) -> Trade:
        trade = self._scan(trade, honour_expiry=honour_expiry)
        if trade.status is TradeStatus.TRADE_CLOSED:
            raise TradeRefused(TRADE_HAS_CLOSE, "the trade is closed")
        if trade.status is not TradeStatus.WAIT_BUYER_PAY:
            raise TradeRefused(TRADE_HAS_SUCCESS, "the trade is already paid")
        now = self._clock()
        if honour_expiry and now >= trade.expires_at:
            raise TradeRefused(QR_CODE_EXPIRED, "the QR code has expired")
        trade = self._store(replace(trade, status=TradeStatus.TRADE_SUCCESS, paid_at=now))
        self._on_event(trade, "payment", None)
        return trade

    def _store(self, trade: Trade) -> Trade:
        self._trades[trade.out_trade_no] = trade
        if trade.scan is not None:
            self._out_trade_nos[trade.scan.trade_no] = trade.out_trade_no
        return trade

    def _new_trade_no(self, now: datetime) -> str:
        # Alipay's shape: 28 digits starting with the China-time date.
        while True:
            trade_no = f"{now.astimezone(CHINA_TIME):%Y%m%d}22001{_digits(15)}"
            if trade_no not in self._out_trade_nos:
                return trade_no


def _precreate_again(existing: Trade, total_amount: Decimal) -> Trade:
    if existing.total_amount != total_amount:
        raise TradeRefused(
            CONTEXT_INCONSISTENT,
            f"precreated for {existing.total_amount}, not {total_amount}",
        )
    if existing.status is TradeStatus.TRADE_CLOSED:
        raise TradeRefused(TRADE_HAS_CLOSE, "the trade is closed")
    if existing.paid_at is not None:
        raise TradeRefused(TRADE_HAS_SUCCESS, "the trade is already paid")
    return existing


def _check_refundable(trade: Trade, amount: Decimal, *, full_only: bool) -> None:
    if trade.status is TradeStatus.TRADE_FINISHED:
        raise TradeRefused(TRADE_HAS_FINISHED, "a finished trade cannot be refunded")
    if trade.status is not TradeStatus.TRADE_SUCCESS:
        raise TradeRefused(TRADE_STATUS_ERROR, f"a {trade.status} trade cannot be refunded")
    if full_only and amount != trade.total_amount:
        raise TradeRefused(
            REFUND_AMT_NOT_EQUAL_TOTAL, "a refund without out_request_no must be for the total"
        )
    left = trade.total_amount - trade.refunded_amount
    if amount > left:
        raise TradeRefused(
            REFUND_AMT_NOT_EQUAL_TOTAL, f"refund of {amount} exceeds the {left} left to refund"
        )


def _digits(count: int) -> str:
    return "".join(str(secrets.randbelow(10)) for _ in range(count))
