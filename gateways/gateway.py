"""What paysaga asks of a payment gateway, in paysaga's own terms.

Each gateway module adapts its wire protocol to these two faces:

- `PaymentGateway`, the calls paysaga makes: create a QR payment, query and close its trade,
  refund a payment and ask whether the refund went through. Amounts are integer cents; every
  call that changes something is idempotent by the key paysaga passes (`out_trade_no`,
  `refund_no`), which the adapter hands to the gateway as the key the gateway itself honours.
- `NotificationVerifier`, the door the gateway knocks on: it proves a callback came from the
  gateway for us, reads it into a gateway-neutral `NotifiedEvent`, and says how to answer it
  in the gateway's own words.

Failures are the typed errors of `gateways.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

# A signature nonce is remembered for as long as its timestamp would still be accepted: past
# that, the timestamp check alone refuses a replay.
FRESHNESS_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class GatewayTrade:
    """What the gateway says of one order's trade."""

    out_trade_no: str
    # The gateway's own id of the trade, once it exists there.
    trade_no: str | None
    # Money was captured (a trade that is only awaiting payment is not paid).
    paid: bool
    amount_cents: int
    paid_at: datetime | None


class PaymentGateway(Protocol):
    """The calls paysaga makes to one gateway. Transient failures raise GatewayUnavailable."""

    async def create_qr_payment(
        self,
        *,
        out_trade_no: str,
        amount_cents: int,
        subject: str,
        expires_at: datetime,
        notify_url: str | None = None,
    ) -> str:
        """The QR code's content; asking again for the same trade answers the same code.
        Payments are notified to `notify_url`, or to the one configured if None."""
        ...

    async def query(self, *, out_trade_no: str) -> GatewayTrade:
        """Raises TradeNotFound when the gateway has no such trade (yet)."""
        ...

    async def close(self, *, out_trade_no: str) -> None:
        """Close an unpaid trade so it can no longer be paid.

        Raises TradeNotFound when there is nothing to close, and TradeStatusError or
        TradeAlreadyPaid when the trade may not be closed — it may have been paid.
        """
        ...

    async def refund(
        self,
        *,
        out_trade_no: str,
        trade_no: str,
        refund_no: str,
        amount_cents: int,
        total_cents: int,
    ) -> None:
        """Ask for a refund; the gateway refunds once per `refund_no`, however often asked."""
        ...

    async def refund_succeeded(self, *, out_trade_no: str, refund_no: str) -> bool:
        """True once the money is back with the buyer, False while the refund is under way.

        Raises GatewayRejected when the refund failed for good.
        """
        ...


class EventKind(StrEnum):
    PAYMENT = "payment"  # the trade is paid: money came in
    REFUND = "refund"  # about a refund: never a payment
    OTHER = "other"  # anything else the gateway tells (a trade closed, awaiting payment)


@dataclass(frozen=True)
class CallbackRequest:
    """A callback as it arrived: header names in lower case, the body's exact bytes."""

    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class NotifiedEvent:
    """A verified notification, read into paysaga's terms."""

    gateway: str
    kind: EventKind
    # The same across the gateway's resends of one notification.
    event_id: str
    out_trade_no: str
    trade_no: str | None
    # The gateway's own word for the trade's state, kept for the audit trail.
    trade_status: str
    # The trade's total as the gateway states it.
    amount_cents: int | None
    paid_at: datetime | None
    # For gateways whose signature covers a nonce: seen twice within FRESHNESS_WINDOW, the
    # second request is a replay.
    nonce: str | None = None


@dataclass(frozen=True)
class CallbackReply:
    status_code: int
    body: bytes
    media_type: str | None


class NotificationVerifier(Protocol):
    """One gateway's callback door."""

    def verify(self, request: CallbackRequest, *, now: datetime) -> NotifiedEvent:
        """The event, once proven to come from the gateway for us; else NotificationRejected."""
        ...

    def acknowledgement(self) -> CallbackReply:
        """The answer that makes the gateway stop resending."""
        ...

    def refusal(self, status_code: int, message: str) -> CallbackReply:
        """An answer that makes the gateway send again later (or that a forger reads)."""
        ...
