"""A breaker in front of one gateway: when its calls fail too often, new orders stop going there.

`Breaker` is a `PaymentGateway` that passes every call through to the gateway it wraps and keeps
the outcomes of the last few seconds. A call failed when the gateway did not answer usefully
(`GatewayUnavailable`: no answer, HTTP 5xx, its own system error) or answered what we cannot
trust (`GatewayResponseInvalid`); a business refusal (`GatewayRejected`, e.g. TradeNotFound)
is the gateway answering, so it counts as a success.

The breaker opens when more than `failure_ratio` of the window's calls failed, once the window
holds at least `min_calls`; it closes at the first call that gets through — a saga's, or a
`probe`. It never refuses a call itself: sagas already running keep retrying with Temporal's
backoff, and it is the API that stops taking new orders, from the state `on_change` reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from gateways.errors import (
    GatewayError,
    GatewayRejected,
    GatewayResponseInvalid,
    GatewayUnavailable,
)
from gateways.gateway import GatewayTrade, PaymentGateway

T = TypeVar("T")
# An out_trade_no no order can have (orders' start with `ord_`), valid at both gateways: asking
# for it gets TradeNotFound from a gateway that is up, and changes nothing anywhere.
PROBE_TRADE_NO = "paysaga_breaker_probe"


class Breaker:
    def __init__(
        self,
        gateway: PaymentGateway,
        *,
        failure_ratio: Decimal,
        window_seconds: float,
        min_calls: int,
        on_change: Callable[[bool, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_change(open, reason)` is told each time the breaker opens or closes."""
        self._gateway = gateway
        self._failure_ratio = failure_ratio
        self._window_seconds = window_seconds
        self._min_calls = min_calls
        self._on_change = on_change
        self._clock = clock
        # (when, failed) of each call in the window, oldest first.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._last_failure: GatewayError | None = None
        self.is_open = False

    async def create_qr_payment(
        self,
        *,
        out_trade_no: str,
        amount_cents: int,
        subject: str,
        expires_at: datetime,
        notify_url: str | None = None,
    ) -> str:
        return await self._watch(
            self._gateway.create_qr_payment(
                out_trade_no=out_trade_no,
                amount_cents=amount_cents,
                subject=subject,
                expires_at=expires_at,
                notify_url=notify_url,
            )
        )

    async def query(self, *, out_trade_no: str) -> GatewayTrade:
        return await self._watch(self._gateway.query(out_trade_no=out_trade_no))

    async def close(self, *, out_trade_no: str) -> None:
        await self._watch(self._gateway.close(out_trade_no=out_trade_no))

    async def refund(
        self,
        *,
        out_trade_no: str,
        trade_no: str,
        refund_no: str,
        amount_cents: int,
        total_cents: int,
    ) -> None:
        await self._watch(
            self._gateway.refund(
                out_trade_no=out_trade_no,
                trade_no=trade_no,
                refund_no=refund_no,
                amount_cents=amount_cents,
                total_cents=total_cents,
            )
        )

    async def refund_succeeded(self, *, out_trade_no: str, refund_no: str) -> bool:
        return await self._watch(
            self._gateway.refund_succeeded(out_trade_no=out_trade_no, refund_no=refund_no)
        )

    async def probe(self) -> None:
        """Ask the gateway about a trade that cannot exist: any answer closes the breaker."""
        try:
            await self.query(out_trade_no=PROBE_TRADE_NO)
        except GatewayError:
            # TradeNotFound, the expected answer, has closed it already; a failure keeps it open.
            pass

    def hold_open(self) -> None:
        """Take over an opening reported elsewhere (another worker, or before this one started),
        so that this process probes too: whoever's call gets through first closes it."""
        self.is_open = True

    def hold_closed(self) -> None:
        """Take over a closing reported elsewhere (another worker's call got through), without
        reporting it again: from now on this process's calls judge afresh, and reopen it, and
        report that, if they keep failing here."""
        self.is_open = False
        self._outcomes.clear()
        self._failures = 0

    async def _watch(self, call: Awaitable[T]) -> T:
        try:
            result = await call
        except (GatewayUnavailable, GatewayResponseInvalid) as failure:
            self._record(failure)
            raise
        except GatewayRejected:
            # A business refusal: the gateway is up and answering.
            self._record(None)
            raise
        self._record(None)
        return result

    def _record(self, failure: GatewayError | None) -> None:
        """One call's outcome: the failure it raised, or None if the gateway answered."""
        now = self._clock()
        self._outcomes.append((now, failure is not None))
        if failure is not None:
            self._failures += 1
            self._last_failure = failure
        while self._outcomes and self._outcomes[0][0] <= now - self._window_seconds:
            _, old_failed = self._outcomes.popleft()
            self._failures -= old_failed
        if self.is_open and failure is None:
            self._change(False, "a call got through")
        elif not self.is_open and self._tripped():
            calls = len(self._outcomes)
            self._change(
                True,
                f"{self._failures} of its last {calls} calls failed within "
                f"{self._window_seconds:g} s, the last with: {self._last_failure}",
            )

    def _tripped(self) -> bool:
        calls = len(self._outcomes)
        return calls >= self._min_calls and self._failures > self._failure_ratio * calls

    def _change(self, is_open: bool, reason: str) -> None:
        self.is_open = is_open
        # Each state judges only its own calls: failures from before a recovery must not
        # reopen it at the next hiccup.
        self._outcomes.clear()
        self._failures = 0
        self._on_change(is_open, reason)
