"""Everything one running sandbox holds, and the route dependency that hands it out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from sandbox.faults import FaultSwitch
from sandbox.keys import AppPublicKey, load_or_create_private_key
from sandbox.notifications import notification_fields
from sandbox.notifier import Notifier
from sandbox.settings import SandboxSettings
from sandbox.trades import Refund, Trade, TradeBook, TradeEvent


class Sandbox:
    def __init__(self, settings: SandboxSettings, *, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self.private_key = load_or_create_private_key(
            settings.private_key_file, settings.public_key_file
        )
        self.app_key = AppPublicKey(settings.app_public_key_file)
        self.faults = FaultSwitch()
        self.notifier = Notifier(
            app_id=settings.app_id,
            private_key=self.private_key,
            faults=self.faults,
            retry_scale=settings.notify_retry_scale,
            clock=clock,
        )
        self.book = TradeBook(on_event=self._notify, clock=clock)

    @property
    def honour_expiry(self) -> bool:
        return not self.faults.current.accept_expired_qr

    def _notify(self, trade: Trade, kind: TradeEvent, refund: Refund | None) -> None:
        # Alipay only notifies merchants that gave a notify_url when they precreated.
        if trade.notify_url:
            self.notifier.send(
                url=trade.notify_url,
                out_trade_no=trade.out_trade_no,
                kind=kind,
                fields=notification_fields(trade, refund, seller_id=self.settings.seller_id),
            )


def get_sandbox(request: Request) -> Sandbox:
    sandbox = request.app.state.sandbox
    if not isinstance(sandbox, Sandbox):
        raise TypeError("the app was not made by sandbox.app.create_app")
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]
