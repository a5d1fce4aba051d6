"""The sandbox's own JSON endpoints: what it holds, the money it moved, and its faults."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from sandbox.faults import Faults
from sandbox.state import SandboxDep
from sandbox.trades import TRADE_NOT_EXIST
from sandbox.views import Ledger, TradeView, ledger, trade_view

router = APIRouter(prefix="/sandbox")


@router.get("/trades")
async def list_trades(sandbox: SandboxDep) -> list[TradeView]:
    return [
        trade_view(trade, sandbox.notifier.deliveries(trade.out_trade_no))
        for trade in sandbox.book.all()
    ]


@router.get("/trades/{out_trade_no}")
async def get_trade(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    trade = sandbox.book.get(out_trade_no)
    if trade is None:
        detail = {"reason": TRADE_NOT_EXIST, "message": f"no QR code for {out_trade_no}"}
        raise HTTPException(status_code=404, detail=detail)
    return trade_view(trade, sandbox.notifier.deliveries(out_trade_no))


@router.get("/ledger")
async def get_ledger(sandbox: SandboxDep) -> Ledger:
    return ledger(sandbox.book.all())


@router.get("/faults")
async def get_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults.current


@router.put("/faults")
async def put_faults(faults: Faults, sandbox: SandboxDep) -> Faults:
    return sandbox.faults.replace(faults)


@router.delete("/faults")
async def reset_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults.reset()
