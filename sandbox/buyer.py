"""The buyer's side: scanning and paying QR codes, over JSON for tests and HTML for people.

Opening a QR code's page is the scan, as pointing Alipay's app at the code is: it creates
the trade, so a close after that finds a WAIT_BUYER_PAY trade instead of none.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from gateways.alipay_formats import format_amount
from sandbox.state import Sandbox, SandboxDep
from sandbox.trades import TRADE_NOT_EXIST, Trade, TradeRefused
from sandbox.views import TradeView, trade_view

router = APIRouter()


@contextmanager
def _refusals_as_http() -> Iterator[None]:
    """Refused trade operations as 404 (no such QR code) or 409 with the reason, in JSON."""
    try:
        yield
    except TradeRefused as refusal:
        detail = {"reason": refusal.code, "message": refusal.message}
        raise HTTPException(status_code=_status(refusal), detail=detail) from None


@router.post("/sandbox/trades/{out_trade_no}/scan")
async def scan(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    with _refusals_as_http():
        trade = await sandbox.book.scan(out_trade_no, honour_expiry=sandbox.honour_expiry)
    return _view(sandbox, trade)


@router.post("/sandbox/trades/{out_trade_no}/pay")
async def pay(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    with _refusals_as_http():
        trade = await sandbox.book.pay(out_trade_no, honour_expiry=sandbox.honour_expiry)
    return _view(sandbox, trade)


@router.post("/sandbox/trades/{out_trade_no}/finish")
async def finish(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    with _refusals_as_http():
        trade = await sandbox.book.finish(out_trade_no)
    return _view(sandbox, trade)


@router.get("/qr/{out_trade_no}", response_class=HTMLResponse)
async def qr_page(out_trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
    try:
        trade = await sandbox.book.scan(out_trade_no, honour_expiry=sandbox.honour_expiry)
    except TradeRefused as refusal:
        return _refusal_page(refusal)
    action = html.escape(f"/qr/{trade.out_trade_no}/pay", quote=True)
    return _page(
        "Pay with the Alipay sandbox",
        f"{_summary(trade)}"
        f'<form method="post" action="{action}"><button type="submit">Pay</button></form>',
    )


@router.post("/qr/{out_trade_no}/pay", response_class=HTMLResponse)
async def qr_pay(out_trade_no: str, sandbox: SandboxDep) -> HTMLResponse:
    try:
        trade = await sandbox.book.pay(out_trade_no, honour_expiry=sandbox.honour_expiry)
    except TradeRefused as refusal:
        return _refusal_page(refusal)
    return _page("Paid", _summary(trade))


def _view(sandbox: Sandbox, trade: Trade) -> TradeView:
    return trade_view(trade, sandbox.notifier.deliveries(trade.out_trade_no))


def _summary(trade: Trade) -> str:
    return (
        f"<p>{html.escape(trade.subject)}</p>"
        f"<p><strong>¥{format_amount(trade.total_amount)}</strong></p>"
        f"<p>Order {html.escape(trade.out_trade_no)} · {html.escape(str(trade.status))}</p>"
    )


def _status(refusal: TradeRefused) -> int:
    return 404 if refusal.code == TRADE_NOT_EXIST else 409


def _refusal_page(refusal: TradeRefused) -> HTMLResponse:
    body = f"<p>{html.escape(refusal.message)} ({html.escape(refusal.code)})</p>"
    return _page("Payment refused", body, status_code=_status(refusal))


def _page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status_code,
    )
