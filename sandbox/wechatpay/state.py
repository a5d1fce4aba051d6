"""What the WeChat Pay half holds — its key pair, the merchant's public key, the APIv3 key, its
order book — and how it completes refunds, tells merchants and shows its orders."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from sandbox.keys import PublicKeyFile, load_or_create_apiv3_key, load_or_create_key_pair
from sandbox.money import fen_to_yuan
from sandbox.notifier import Notifier, TradeEvent
from sandbox.settings import SandboxSettings
from sandbox.tasks import BackgroundTasks
from sandbox.views import RefundSummary, TradeSummary
from sandbox.wechatpay import resources
from sandbox.wechatpay.notifications import (
    RULES,
    ResourceType,
    event_body,
    new_event_id,
    signed_anew,
)
from sandbox.wechatpay.transactions import ApiError, Order, OrderBook, Refund


class WechatPayHalf:
    def __init__(
        self,
        settings: SandboxSettings,
        *,
        notifier: Notifier,
        tasks: BackgroundTasks,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._notifier = notifier
        self._tasks = tasks
        self._clock = clock
        self.private_key = load_or_create_key_pair(
            settings.wechatpay_private_key_file, settings.wechatpay_public_key_file
        )
        self.apiv3_key = load_or_create_apiv3_key(settings.wechatpay_apiv3_key_file)
        self.merchant_key = PublicKeyFile(settings.wechatpay_merchant_public_key_file)
        self.book = OrderBook(on_event=self._notify, clock=clock)

    def code_url(self, order: Order) -> str:
        """An http stand-in for WeChat Pay's `weixin://wxpay/bizpayurl?pr=…`.

        A real code_url opens only in the WeChat app; an http URL on the sandbox is the
        nearest thing a browser, or a test, can open: the buyer's page for the order.
        """
        return f"{self._settings.code_url_base}?pr={order.token}"

    async def refund(
        self,
        *,
        transaction_id: str | None,
        out_trade_no: str | None,
        out_refund_no: str,
        amount: int,
        total: int,
        notify_url: str | None,
    ) -> tuple[Order, Refund]:
        """Accept a refund, PROCESSING; it succeeds `wechatpay_refund_seconds` later."""
        order, refund, new = await self.book.refund(
            transaction_id=transaction_id,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            amount=amount,
            total=total,
            notify_url=notify_url,
        )
        if new:
            self._tasks.start(self._complete_later(out_refund_no))
        return order, refund

    def summary(self, out_trade_no: str) -> TradeSummary | None:
        order = self.book.get(out_trade_no)
        return None if order is None else _summary(order)

    def summaries(self) -> list[TradeSummary]:
        return [_summary(order) for order in self.book.all()]

    async def scan(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary:
        return _summary(await self.book.scan(out_trade_no, honour_expiry=honour_expiry))

    async def pay(self, out_trade_no: str, *, honour_expiry: bool) -> TradeSummary:
        return _summary(await self.book.pay(out_trade_no, honour_expiry=honour_expiry))

    async def finish(self, out_trade_no: str) -> TradeSummary:
        raise ApiError(
            400, "INVALID_REQUEST", "WeChat Pay has no TRADE_FINISHED: that is Alipay's alone"
        )

    async def _complete_later(self, out_refund_no: str) -> None:
        await asyncio.sleep(self._settings.wechatpay_refund_seconds)
        await self.book.complete_refund(out_refund_no)

    def _notify(self, order: Order, kind: TradeEvent, refund: Refund | None) -> None:
        resource, original_type, url = self._notice(order, refund)
        event_id = new_event_id()
        body = event_body(
            resource, original_type, event_id=event_id, now=self._clock(), apiv3_key=self.apiv3_key
        )
        self._notifier.send(
            url=url,
            notify_id=event_id,
            out_trade_no=order.out_trade_no,
            kind=kind,
            rules=RULES,
            attempt=signed_anew(
                body,
                clock=self._clock,
                private_key=self.private_key,
                key_id=self._settings.wechatpay_public_key_id,
            ),
        )

    def _notice(
        self, order: Order, refund: Refund | None
    ) -> tuple[resources.Json, ResourceType, str]:
        if refund is None:
            return resources.transaction(order), "transaction", order.notify_url
        # Without a refund notify_url WeChat Pay uses the one set in the merchant's console;
        # the sandbox has no console, and uses the order's.
        url = refund.notify_url or order.notify_url
        return resources.refund_notice(order, refund), "refund", url


def _summary(order: Order) -> TradeSummary:
    return TradeSummary(
        gateway="wechatpay",
        out_trade_no=order.out_trade_no,
        trade_no=order.payment.transaction_id if order.payment is not None else None,
        status=order.state,
        subject=order.description,
        total=fen_to_yuan(order.total),
        paid=order.payment is not None,
        expires_at=order.expires_at,
        refunds=tuple(
            RefundSummary(refund.out_refund_no, fen_to_yuan(refund.amount), refund.succeeded_at)
            for refund in order.refunds
            # Only money that went back: a refund still processing is not shown yet.
            if refund.succeeded_at is not None
        ),
    )
