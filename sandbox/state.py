"""Everything one running sandbox holds — its two halves and what they share — and the route
dependency that hands it out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, Request

from sandbox.alipay.state import AlipayHalf
from sandbox.faults import FaultSwitch
from sandbox.notifier import Notifier
from sandbox.refusal import NoSuchTrade
from sandbox.settings import SandboxSettings
from sandbox.tasks import BackgroundTasks
from sandbox.views import TradeSummary
from sandbox.wechatpay.state import WechatPayHalf


class Half(Protocol):
    """What the buyer and the inspection endpoints do with either half; refusals are raised
    as `sandbox.refusal.Refused`."""

    def summary(self, out_trade_no: str) -> TradeSummary | None: ...

    def summaries(self) -> list[TradeSummary]: ...

    async def scan(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary: ...

    async def pay(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary: ...

    async def finish(self, out_trade_no: str) -> TradeSummary: ...


class Sandbox:
    def __init__(self, settings: SandboxSettings, *, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self.faults = FaultSwitch()
        self.tasks = BackgroundTasks()
        self.notifier = Notifier(
            faults=self.faults, retry_scale=settings.notify_retry_scale, tasks=self.tasks
        )
        self.alipay = AlipayHalf(settings, notifier=self.notifier, clock=clock)
        self.wechatpay = WechatPayHalf(
            settings, notifier=self.notifier, tasks=self.tasks, clock=clock
        )
        self.halves: tuple[Half, ...] = (self.alipay, self.wechatpay)

    @property
    def honour_expiry(self) -> bool:
        return not self.faults.current.accept_expired_qr

    def holding(self, out_trade_no: str) -> tuple[Half, TradeSummary]:
        """The half holding the order, and the order as it stands; our order ids are unique
        across gateways, so at most one does."""
        for half in self.halves:
            summary = half.summary(out_trade_no)
            if summary is not None:
                return half, summary
        raise NoSuchTrade(f"order {out_trade_no}")

    async def aclose(self) -> None:
        """Stop: pending deliveries and refunds are abandoned, as a stopped gateway's are."""
        await self.tasks.aclose()
        await self.notifier.aclose()


def get_sandbox(request: Request) -> Sandbox:
    sandbox = request.app.state.sandbox
    if not isinstance(sandbox, Sandbox):
        raise TypeError("the app was not made by sandbox.app.create_app")
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]
