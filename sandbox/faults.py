"""Fault switches: the ways the sandbox can misbehave like a gateway on a bad day.

One switch serves both halves. Counters (`drop_notifications`, `fail_methods`) count down as
faults fire, whichever half they fire in, so `GET /sandbox/faults` shows what is still armed.
Rates (`fail_rate`, `drop_rate`) fire at random, drawn from a source seeded with `seed` when the
faults are switched, so that a run can be repeated. What fired since the sandbox started, armed
either way, is counted: `GET /sandbox/faults/fired`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

FailMode = Literal["system_error", "http_503", "applied_then_system_error", "refused"]


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The next N notifications are never sent: lost, as gateways' can be.
    drop_notifications: NonNegativeInt = 0
    # Each notification is never sent with this chance, besides the next N above.
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    # How many copies of each notification go out at once (1: no duplicates).
    duplicate_notifications: int = Field(default=1, ge=1)
    notification_delay_seconds: float = Field(default=0.0, ge=0)
    # Method -> how many of its next calls fail, as `fail_mode` says. Alipay's by their OpenAPI
    # names (`alipay.trade.query`); WeChat Pay's as `wechatpay.native`, `wechatpay.query`,
    # `wechatpay.close`, `wechatpay.refund` and `wechatpay.refund_query`.
    fail_methods: dict[str, NonNegativeInt] = Field(default_factory=dict)
    # Each merchant call of either gateway, of any method, fails with this chance, as
    # `fail_mode` says. The buyer's side (scanning, paying) never fails.
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    # `system_error`: the gateway's system error without acting (Alipay's code 20000
    # ACQ.SYSTEM_ERROR, WeChat Pay's 500 SYSTEM_ERROR); `http_503`: no gateway answer at all;
    # `applied_then_system_error`: the call takes effect but its answer says it failed, which
    # is why both gateways tell merchants to retry with the same parameters; `refused`: a
    # business refusal that asking again will not change (Alipay's 40004
    # ACQ.ACCESS_FORBIDDEN, WeChat Pay's 403 NO_AUTH: the merchant may not use the API).
    fail_mode: FailMode = "system_error"
    # The rates' random source starts from this seed (none: from the system's entropy).
    seed: int | None = None
    # A close of a still-unpaid trade finds the buyer has just paid: the payment wins the race.
    pay_before_close: bool = False
    # QR codes can be paid after their expiry.
    accept_expired_qr: bool = False


class FaultsFired(BaseModel):
    """What the faults did since the sandbox started, whichever switch armed them."""

    # Merchant calls that reached a method, and those of them that were made to fail.
    gateway_calls: dict[str, int] = Field(default_factory=dict)
    gateway_calls_failed: dict[str, int] = Field(default_factory=dict)
    notifications_dropped: int = 0
    # Copies sent beyond the first.
    notifications_duplicated: int = 0


class FaultSwitch:
    def __init__(self) -> None:
        self.current = Faults()
        self._random = random.Random()
        self._calls: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._dropped = 0
        self._duplicated = 0

    def replace(self, faults: Faults) -> Faults:
        self.current = faults
        self._random = random.Random(faults.seed)
        return faults

    def reset(self) -> Faults:
        return self.replace(Faults())

    def fired(self) -> FaultsFired:
        return FaultsFired(
            gateway_calls=dict(self._calls),
            gateway_calls_failed=dict(self._failed),
            notifications_dropped=self._dropped,
            notifications_duplicated=self._duplicated,
        )

    def take_method_failure(self, method: str) -> FailMode | None:
        """For each merchant call: the failure mode if it is to fail, using up one count if a
        counter armed it."""
        self._calls[method] += 1
        left = self.current.fail_methods.get(method, 0)
        if left > 0:
            fail_methods = {**self.current.fail_methods, method: left - 1}
            self.current = self.current.model_copy(update={"fail_methods": fail_methods})
        elif not self._chance(self.current.fail_rate):
            return None
        self._failed[method] += 1
        return self.current.fail_mode

    def take_notification_copies(self) -> int:
        """How many copies of the next notification go out: 0 if it is dropped."""
        if self.current.drop_notifications > 0:
            left = self.current.drop_notifications - 1
            self.current = self.current.model_copy(update={"drop_notifications": left})
        elif not self._chance(self.current.drop_rate):
            self._duplicated += self.current.duplicate_notifications - 1
            return self.current.duplicate_notifications
        self._dropped += 1
        return 0

    def _chance(self, rate: float) -> bool:
        # No draw at rate 0, so that other switches leave the sequence of draws as it was.
        return rate > 0 and self._random.random() < rate
