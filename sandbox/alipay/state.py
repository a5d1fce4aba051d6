"""What the Alipay half holds — its key pair, the merchant app's public key, its trade book —
and how it tells merchants and shows its trades."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime

from sandbox.alipay.notifications import RULES, notification_fields, signed_form
from sandbox.alipay.trades import Refund, Trade, TradeBook
from sandbox.keys import PublicKeyFile, load_or_create_key_pair
from sandbox.notifier import Notifier, TradeEvent
from sandbox.settings import SandboxSettings
from sandbox.views import RefundSummary, TradeSummary


class AlipayHalf:
    def __init__(
        self, settings: SandboxSettings, *, notifier: Notifier, clock: Callable[[], datetime]
    ) -> None:
        self._settings = settings
        self._notifier = notifier
        self._clock = clock
        self.private_key = load_or_create_key_pair(
            settings.private_key_file, settings.public_key_file
        )
        self.app_key = PublicKeyFile(settings.app_public_key_file)
        self.book = TradeBook(on_event=self._notify, clock=clock)

    def summary(self, out_trade_no: str) -> TradeSummary | None:
        trade = self.book.get(out_trade_no)
        return None if trade is None else _summary(trade)

    def summaries(self) -> list[TradeSummary]:
        return [_summary(trade) for trade in self.book.all()]

    async def scan(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary:
        return _summary(await self.book.scan(out_trade_no, honour_expiry=honour_expiry))

    async def pay(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary:
        return _summary(await self.book.pay(out_trade_no, honour_expiry=honour_expiry))

    async def finish(self, out_trade_no: str) -> TradeSummary:
        return _summary(await self.book.finish(out_trade_no))

    def _notify(self, trade: Trade, kind: TradeEvent, refund: Refund | None) -> None:
        # Alipay only notifies merchants that gave a notify_url when they precreated.
        if not trade.notify_url:
            return
        notify_id = secrets.token_hex(17)
        form = signed_form(
            notification_fields(trade, refund, seller_id=self._settings.seller_id),
            notify_id=notify_id,
            app_id=self._settings.app_id,
            now=self._clock(),
            private_key=self.private_key,
        )
        self._notifier.send(
            url=trade.notify_url,
            notify_id=notify_id,
            out_trade_no=trade.out_trade_no,
            kind=kind,
            rules=RULES,
            # The very same signed form, every attempt.
            attempt=lambda: form,
        )


def _summary(trade: Trade) -> TradeSummary:
    return TradeSummary(
        gateway="alipay",
        out_trade_no=trade.out_trade_no,
        trade_no=trade.scan.trade_no if trade.scan is not None else None,
        status=trade.status,
        subject=trade.subject,
        total=trade.total_amount,
        paid=trade.paid_at is not None,
        expires_at=trade.expires_at,
        refunds=tuple(
            RefundSummary(refund.out_request_no, refund.amount, refund.refunded_at)
            for refund in trade.refunds
        ),
    )
