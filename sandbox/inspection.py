"""The sandbox's own JSON endpoints: what both halves hold, the money they moved, and the
faults switched on for the whole sandbox."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from sandbox.faults import Faults, FaultsFired
from sandbox.refusal import NoSuchTrade
from sandbox.state import SandboxDep
from sandbox.views import Ledger, TradeView, ledger, trade_view

router = APIRouter(prefix="/sandbox")


@router.get("/trades")
async def list_trades(sandbox: SandboxDep) -> list[TradeView]:
    return [
        trade_view(trade, sandbox.notifier.deliveries(trade.out_trade_no))
        for half in sandbox.halves
        for trade in half.summaries()
    ]


@router.get("/trades/{out_trade_no}")
async def get_trade(out_trade_no: str, sandbox: SandboxDep) -> TradeView:
    try:
        _, trade = sandbox.holding(out_trade_no)
    except NoSuchTrade as missing:
        detail = {"reason": missing.code, "message": missing.message}
        raise HTTPException(status_code=404, detail=detail) from None
    return trade_view(trade, sandbox.notifier.deliveries(out_trade_no))


@router.get("/ledger")
async def get_ledger(sandbox: SandboxDep) -> Ledger:
    return ledger([trade for half in sandbox.halves for trade in half.summaries()])


@router.get("/faults")
async def get_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults.current


@router.get("/faults/fired")
async def get_faults_fired(sandbox: SandboxDep) -> FaultsFired:
    return sandbox.faults.fired()


@router.put("/faults")
async def put_faults(faults: Faults, sandbox: SandboxDep) -> Faults:
    return sandbox.faults.replace(faults)


@router.delete("/faults")
async def reset_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.faults.reset()
