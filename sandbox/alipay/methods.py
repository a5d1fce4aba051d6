"""The Alipay OpenAPI methods the sandbox answers: a biz_content in, a response node out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sandbox.alipay.openapi import SUCCESS, Node
from sandbox.alipay.wire import parse_amount
from sandbox.china_time import CHINA_TIME, parse_wall_time, wall_time
from sandbox.money import yuan
from sandbox.state import Sandbox

Handler = Callable[[Sandbox, dict[str, object], str | None], Awaitable[Node]]

_TIMEOUT_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _china_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be a 'yyyy-MM-dd HH:mm:ss' string")
    return parse_wall_time(value)


def _timeout_express(value: object) -> timedelta | Literal["1c"]:
    """Alipay's relative expiry: `1m` to `15d` in minutes, hours or days, or `1c` (today)."""
    if value == "1c":
        return "1c"
    if not isinstance(value, str) or value[-1:] not in _TIMEOUT_UNITS or not value[:-1].isdigit():
        raise ValueError("must look like 90m, 2h, 1d or 1c")
    span = timedelta(**{_TIMEOUT_UNITS[value[-1]]: int(value[:-1])})
    if not timedelta(minutes=1) <= span <= timedelta(days=15):
        raise ValueError("must be between 1m and 15d")
    return span


Amount = Annotated[Decimal, BeforeValidator(parse_amount)]
ChinaTime = Annotated[datetime, BeforeValidator(_china_time)]
TimeoutExpress = Annotated[timedelta | Literal["1c"], BeforeValidator(_timeout_express)]


class _BizContent(BaseModel):
    # Alipay takes numbers where it documents strings (an out_trade_no of digits, say).
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class PrecreateContent(_BizContent):
    out_trade_no: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    total_amount: Amount
    subject: str = Field(min_length=1, max_length=256)
    timeout_express: TimeoutExpress | None = None
    time_expire: ChinaTime | None = None

    def expires_at(self, now: datetime) -> datetime | None:
        # time_expire wins over timeout_express when both are given.
        if self.time_expire is not None:
            return self.time_expire
        if self.timeout_express == "1c":
            tomorrow = now.astimezone(CHINA_TIME).date() + timedelta(days=1)
            return datetime.combine(tomorrow, time(), tzinfo=CHINA_TIME)
        if self.timeout_express is not None:
            return now + self.timeout_express
        return None


class TradeContent(_BizContent):
    out_trade_no: str | None = Field(default=None, max_length=64)
    trade_no: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _names_a_trade(self) -> Self:
        if not (self.out_trade_no or self.trade_no):
            raise ValueError("out_trade_no and trade_no cannot both be empty")
        return self


class RefundContent(TradeContent):
    refund_amount: Amount
    out_request_no: str | None = Field(default=None, min_length=1, max_length=64)


class RefundQueryContent(TradeContent):
    out_request_no: str = Field(min_length=1, max_length=64)
    query_options: list[str] = Field(default_factory=list)


async def precreate(sandbox: Sandbox, biz: dict[str, object], notify_url: str | None) -> Node:
    content = PrecreateContent.model_validate(biz)
    trade = await sandbox.alipay.book.precreate(
        out_trade_no=content.out_trade_no,
        total_amount=content.total_amount,
        subject=content.subject,
        notify_url=notify_url,
        expires_at=content.expires_at(sandbox.clock()),
    )
    qr_code = f"{sandbox.settings.qr_base_url}/{trade.out_trade_no}"
    return {**SUCCESS, "out_trade_no": trade.out_trade_no, "qr_code": qr_code}


async def query(sandbox: Sandbox, biz: dict[str, object], notify_url: str | None) -> Node:
    content = TradeContent.model_validate(biz)
    trade = await sandbox.alipay.book.query(
        out_trade_no=content.out_trade_no, trade_no=content.trade_no
    )
    scan = trade.require_scan()
    paid = yuan(trade.total_amount) if trade.paid_at is not None else "0.00"
    node = {
        **SUCCESS,
        "trade_no": scan.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_logon_id": scan.buyer_logon_id,
        "buyer_user_id": scan.buyer_id,
        "trade_status": str(trade.status),
        "total_amount": yuan(trade.total_amount),
        "receipt_amount": paid,
        "buyer_pay_amount": paid,
        "invoice_amount": paid,
        "point_amount": "0.00",
    }
    if trade.paid_at is not None:
        node["send_pay_date"] = wall_time(trade.paid_at)
    return node


async def close(sandbox: Sandbox, biz: dict[str, object], notify_url: str | None) -> Node:
    content = TradeContent.model_validate(biz)
    trade = await sandbox.alipay.book.close(
        out_trade_no=content.out_trade_no,
        trade_no=content.trade_no,
        buyer_pays_first=sandbox.faults.current.pay_before_close,
    )
    trade_no = trade.require_scan().trade_no
    return {**SUCCESS, "trade_no": trade_no, "out_trade_no": trade.out_trade_no}


async def refund(sandbox: Sandbox, biz: dict[str, object], notify_url: str | None) -> Node:
    content = RefundContent.model_validate(biz)
    trade, done, moved = await sandbox.alipay.book.refund(
        out_trade_no=content.out_trade_no,
        trade_no=content.trade_no,
        amount=content.refund_amount,
        out_request_no=content.out_request_no,
    )
    scan = trade.require_scan()
    return {
        **SUCCESS,
        "trade_no": scan.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_logon_id": scan.buyer_logon_id,
        "buyer_user_id": scan.buyer_id,
        # Y only when this very call moved money; a repeated out_request_no answers N.
        "fund_change": "Y" if moved else "N",
        # Alipay's refund_fee is everything refunded on the trade so far.
        "refund_fee": yuan(trade.refunded_amount),
        "gmt_refund_pay": wall_time(done.refunded_at),
    }


async def refund_query(sandbox: Sandbox, biz: dict[str, object], notify_url: str | None) -> Node:
    content = RefundQueryContent.model_validate(biz)
    trade, found = await sandbox.alipay.book.refund_query(
        out_trade_no=content.out_trade_no,
        trade_no=content.trade_no,
        out_request_no=content.out_request_no,
    )
    # An unknown refund is not an error at Alipay: the answer just has no refund in it.
    if found is None:
        return dict(SUCCESS)
    node = {
        **SUCCESS,
        "trade_no": trade.require_scan().trade_no,
        "out_trade_no": trade.out_trade_no,
        "out_request_no": found.out_request_no,
        "total_amount": yuan(trade.total_amount),
        "refund_amount": yuan(found.amount),
        "refund_status": "REFUND_SUCCESS",
    }
    if "gmt_refund_pay" in content.query_options:
        node["gmt_refund_pay"] = wall_time(found.refunded_at)
    return node


METHODS: dict[str, Handler] = {
    "alipay.trade.precreate": precreate,
    "alipay.trade.query": query,
    "alipay.trade.close": close,
    "alipay.trade.refund": refund,
    "alipay.trade.fastpay.refund.query": refund_query,
}
