"""Fault switches: the ways the sandbox can misbehave like a gateway on a bad day.

One switch serves both halves. Counters (`drop_notifications`, `fail_methods`) count down as
faults fire, whichever half they fire in, so `GET /sandbox/faults` shows what is still armed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

FailMode = Literal["system_error", "http_503", "applied_then_system_error", "refused"]


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The next N notifications are never sent: lost, as gateways' can be.
    drop_notifications: NonNegativeInt = 0
    # How many copies of each notification go out at once (1: no duplicates).
    duplicate_notifications: int = Field(default=1, ge=1)
    notification_delay_seconds: float = Field(default=0.0, ge=0)
    # Method -> how many of its next calls fail, as `fail_mode` says. Alipay's by their OpenAPI
    # names (`alipay.trade.query`); WeChat Pay's as `wechatpay.native`, `wechatpay.query`,
    # `wechatpay.close`, `wechatpay.refund` and `wechatpay.refund_query`.
    fail_methods: dict[str, NonNegativeInt] = Field(default_factory=dict)
    # `system_error`: the gateway's system error without acting (Alipay's code 20000
    # ACQ.SYSTEM_ERROR, WeChat Pay's 500 SYSTEM_ERROR); `http_503`: no gateway answer at all;
    # `applied_then_system_error`: the call takes effect but its answer says it failed, which
    # is why both gateways tell merchants to retry with the same parameters; `refused`: a
    # business refusal that asking again will not change (Alipay's 40004
    # ACQ.ACCESS_FORBIDDEN, WeChat Pay's 403 NO_AUTH: the merchant may not use the API).
    fail_mode: FailMode = "system_error"
    # A close of a still-unpaid trade finds the buyer has just paid: the payment wins the race.
    pay_before_close: bool = False
    # QR codes can be paid after their expiry.
    accept_expired_qr: bool = False


class FaultSwitch:
    def __init__(self) -> None:
        self.current = Faults()

    def replace(self, faults: Faults) -> Faults:
        self.current = faults
        return faults

    def reset(self) -> Faults:
        return self.replace(Faults())

    def take_method_failure(self, method: str) -> FailMode | None:
        """The failure mode if `method`'s next call is armed to fail, using up one count."""
        left = self.current.fail_methods.get(method, 0)
        if left == 0:
            return None
        fail_methods = {**self.current.fail_methods, method: left - 1}
        self.current = self.current.model_copy(update={"fail_methods": fail_methods})
        return self.current.fail_mode

    def take_dropped_notification(self) -> bool:
        if self.current.drop_notifications == 0:
            return False
        left = self.current.drop_notifications - 1
        self.current = self.current.model_copy(update={"drop_notifications": left})
        return True
