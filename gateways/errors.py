"""What can go wrong talking to a payment gateway, as a small typed hierarchy.

    GatewayError
     ├── GatewayUnavailable        transient: no answer, HTTP 5xx, the gateway's own system error;
     │                             the same call may succeed later
     ├── GatewayResponseInvalid    an answer we cannot trust or read: not JSON, no result node,
     │                             a signature that does not verify
     └── GatewayRejected           the gateway refused the request for a business reason
          ├── TradeNotFound        no such trade (for a QR code: nobody has scanned it yet)
          ├── TradeStatusError     the trade is in the wrong state (e.g. closing a paid trade)
          ├── TradeAlreadyPaid     the trade is already paid
          └── TradeFinished        the trade is finished and can no longer be refunded

    NotificationRejected           an incoming notification failed verification; it is not a
                                   call of ours that failed, so it stands outside GatewayError

Retrying helps only with GatewayUnavailable; the others mean the same request gets the same
answer again.
"""

from __future__ import annotations


class GatewayError(Exception):
    """A call to the payment gateway did not succeed."""


class GatewayUnavailable(GatewayError):
    """The gateway did not answer usefully this time; retrying the same call is safe."""


class GatewayResponseInvalid(GatewayError):
    """The gateway's answer cannot be read or its signature does not verify."""


class GatewayRejected(GatewayError):
    """The gateway refused the request: `code`, `sub_code` and `sub_msg` are its own words."""

    def __init__(
        self, code: str, sub_code: str | None, sub_msg: str | None, method: str = "the request"
    ) -> None:
        # All four go to `args` so the exception survives pickling and copying intact.
        super().__init__(code, sub_code, sub_msg, method)
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.method = method

    def __str__(self) -> str:
        reason = self.sub_code or f"code {self.code}"
        detail = f" ({self.sub_msg})" if self.sub_msg else ""
        return f"the gateway refused {self.method}: {reason}{detail}"


class TradeNotFound(GatewayRejected):
    """The trade does not exist at the gateway."""


class TradeStatusError(GatewayRejected):
    """The trade's state does not allow the operation."""


class TradeAlreadyPaid(GatewayRejected):
    """The trade has already been paid."""


class TradeFinished(GatewayRejected):
    """The trade is finished: it can no longer be refunded."""


class NotificationRejected(Exception):
    """A gateway notification failed verification and must not be acted on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"notification rejected: {self.reason}"
