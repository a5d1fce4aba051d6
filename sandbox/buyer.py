"""The buyer's side: scanning and paying QR codes, over JSON for tests and HTML for people.

The JSON routes take the merchant's order number and act in whichever half holds it. The HTML
pages are what each gateway's QR code opens. Opening Alipay's `/qr/{out_trade_no}` is the scan,
as pointing Alipay's app at the code is: it creates the trade, so a close after that finds a
WAIT_BUYER_PAY trade instead of none. Opening WeChat Pay's code_url, `/wxpay/bizpayurl?pr=…`,
changes nothing: the order has existed since the merchant placed it.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from sandbox.money import yuan
from sandbox.refusal import NoSuchTrade, Refused
from sandbox.state import Sandbox, SandboxDep
from sandbox.views import TradeSummary, TradeView, trade_view

router = APIRouter()


@contextmanager
def _refusals_as_http() -> Iterator[None]:
    """Refusals as 404 (no such trade) or 409 with the gateway's reason, in JSON."""
    try:
        yield
    except Refused as refusal:
        detail = {"reason": refusal.code, "message": refusal.message}
        raise HTTPException(status_code=_status(refusal), detail=detail) from None


@router.post("/sandbox/trades/{out_trade_no}/scan")
async def scan(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    with _refusals_as_http():
        half, _ = sandbox.holding(out_trade_no)
        trade = await half.scan(out_trade_no, honour_expiry=sandbox.honour_expiry)
    return _view(sandbox, trade)


@router.post("/sandbox/trades/{out_trade_no}/pay")
async def pay(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    with _refusals_as_http():
        half, _ = sandbox.holding(out_trade_no)
        trade = await half.pay(out_trade_no, honour_expiry=sandbox.honour_expiry)
    return _view(sandbox, trade)


@router.post("/sandbox/trades/{out_trade_no}/finish")
async def finish(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    """The refund window has passed: Alipay's TRADE_FINISHED. WeChat Pay has no such state."""
    with _refusals_as_http():
        half, _ = sandbox.holding(out_trade_no)
        trade = await half.finish(out_trade_no)
    return _view(sandbox, trade)


@router.get("/qr/{out_trade_no}", response_class=HTMLResponse)
async def alipay_page(out_trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
    try:
        trade = await sandbox.alipay.scan(out_trade_no, honour_expiry=sandbox.honour_expiry)
    except Refused as refusal:
        return _refusal_page(refusal)
    return _checkout("Pay with the Alipay sandbox", trade, action=f"/qr/{out_trade_no}/pay")


@router.post("/qr/{out_trade_no}/pay", response_class=HTMLResponse)
async def alipay_pay(out_trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
    try:
        trade = await sandbox.alipay.pay(out_trade_no, honour_expiry=sandbox.honour_expiry)
    except Refused as refusal:
        return _refusal_page(refusal)
    return _page("Paid", _summary(trade))


@router.get("/wxpay/bizpayurl", response_class=HTMLResponse)
async def wechatpay_page(sandbox: SandboxDep, pr: str = "") -> HTMLResponse:
    try:
        trade = await sandbox.wechatpay.scan(
            _coded_order(sandbox, pr), honour_expiry=sandbox.honour_expiry
        )
    except Refused as refusal:
        return _refusal_page(refusal)
    return _checkout("Pay with the WeChat Pay sandbox", trade, action=f"/wxpay/bizpayurl?pr={pr}")


@router.post("/wxpay/bizpayurl", response_class=HTMLResponse)
async def wechatpay_pay(sandbox: SandboxDep, pr: str = "") -> HTMLResponse:
    try:
        trade = await sandbox.wechatpay.pay(
            _coded_order(sandbox, pr), honour_expiry=sandbox.honour_expiry
        )
    except Refused as refusal:
        return _refusal_page(refusal)
    return _page("Paid", _summary(trade))


def _coded_order(sandbox: Sandbox, pr: str) -> str:
    order = sandbox.wechatpay.book.by_token(pr)
    if order is None:
        raise NoSuchTrade(f"order behind the code pr={pr}")
    return order.out_trade_no


def _view(sandbox: Sandbox, trade: TradeSummary) -> TradeView:
    return trade_view(trade, sandbox.notifier.deliveries(trade.out_trade_no))


def _status(refusal: Refused) -> int:
    return 404 if refusal.unknown else 409


def _checkout(title: str, trade: TradeSummary, *, action: str) -> HTMLResponse:
    form_action = html.escape(action, quote=True)
    button = f'<form method="post" action="{form_action}"><button type="submit">Pay</button></form>'
    return _page(title, _summary(trade) + button)


def _summary(trade: TradeSummary) -> str:
    return (
        f"<p>{html.escape(trade.subject)}</p>"
        f"<p><strong>¥{yuan(trade.total)}</strong></p>"
        f"<p>Order {html.escape(trade.out_trade_no)} · {html.escape(str(trade.status))}</p>"
    )


def _refusal_page(refusal: Refused) -> HTMLResponse:
    body = f"<p>{html.escape(refusal.message)} ({html.escape(refusal.code)})</p>"
    return _page("Payment refused", body, status_code=_status(refusal))


def _page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status_code,
    )
