"""Plain data that crosses Temporal: workflow inputs, activity inputs and their results.

Amounts are integer cents, times are aware UTC datetimes; nothing here holds a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from core.vocabulary import EventType, Gateway, OrderKind, OrderStatus, PaymentTiming

# Sagas started before payments had a gateway of their own were all Alipay's: their recorded
# inputs, read again on replay or by a newer worker, carry no gateway field.
BEFORE_GATEWAYS = Gateway.ALIPAY


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True)


class OrderRequest(Contract):
    """What the API asks for; the workflow id is derived from `order_id`."""

    order_id: str
    reservation_id: str
    days: int
    amount_cents: int
    currency: str
    gateway: Gateway = BEFORE_GATEWAYS
    request_fingerprint: str
    payment_timeout_seconds: int
    payment_create_timeout_seconds: int
    # How long after its deadline the saga still watches over an unpaid order for a payment that
    # raced the trade's close, and by how much operators may extend a pending order's deadline
    # (the trade's own expiry at the gateway is set this much later). Sagas started before
    # operator actions existed carry neither: zero.
    late_payment_horizon_seconds: int = 0
    deadline_extension_seconds: int = 0
    # Sagas started before checkout pages and deferred payment carry none of these.
    payment: PaymentTiming = PaymentTiming.IMMEDIATE
    # A deferred order's quote stands this long; its payment deadline runs from the trade.
    quote_ttl_seconds: int = 0
    checkout_token: str | None = None
    return_url: str | None = None
    # Where the gateway notifies the order's payments, fixed when the order is taken: every
    # attempt to make its trade sends the same (WeChat Pay refuses an order placed again with
    # another notify_url). Sagas started before carry none: the worker's own is used.
    notify_url: str | None = None


class ClaimRequest(Contract):
    order: OrderRequest
    expires_at: datetime
    # Sagas that create the payment before they claim hand its QR code over with the claim, and
    # their claim is refused past the creation deadline or once the API gave up on the order.
    qr_code: str | None = None
    create_deadline: datetime | None = None
    # Until when the gateway takes a payment for the trade (None: no trade yet, or a saga from
    # before this was kept).
    payable_until: datetime | None = None


class Claim(Contract):
    kind: OrderKind
    superseded_order_ids: list[str]


class PaymentRequest(Contract):
    gateway: Gateway = BEFORE_GATEWAYS
    order_id: str
    amount_cents: int
    subject: str
    expires_at: datetime
    # None: the notify_url the worker is configured with.
    notify_url: str | None = None


class PaymentInstructions(Contract):
    order_id: str
    reservation_id: str
    kind: OrderKind
    amount_cents: int
    currency: str
    # None for a deferred order until the buyer presses Pay; its `expires_at` is then when
    # its quote lapses.
    qr_code: str | None
    expires_at: datetime


class PaymentStart(Contract):
    """The buyer pressed Pay on a deferred order: the trade is made only if, at that moment,
    the order may still be paid at the price it was quoted."""

    order_id: str
    # What the order's days cost now: a quote whose price has changed is not paid.
    amount_cents: int
    # Set once the trade exists: the check is made again and, if it still holds, the trade
    # recorded in the same transaction.
    qr_code: str | None = None
    expires_at: datetime | None = None
    payable_until: datetime | None = None


class PaymentNotice(Contract):
    """A captured payment: one gateway trade of one order."""

    gateway: Gateway = BEFORE_GATEWAYS
    order_id: str
    trade_no: str
    amount_cents: int
    paid_at: datetime | None


class TradeRef(Contract):
    """An order's trade at its gateway: the order id is the trade's `out_trade_no`."""

    gateway: Gateway = BEFORE_GATEWAYS
    order_id: str


class TradeCheck(Contract):
    """What the gateway says of an order's trade: the payment if it was paid."""

    payment: PaymentNotice | None


class RefundOrder(Contract):
    gateway: Gateway = BEFORE_GATEWAYS
    refund_no: str
    order_id: str
    trade_no: str
    amount_cents: int
    # Why the money goes back, for the operators' view (absent from older histories).
    reason: str | None = None


class Settlement(Contract):
    """A payment's fate, and its order's status right after the decision."""

    outcome: Literal["paid", "refund", "settled_before"]
    order_status: OrderStatus
    refund: RefundOrder | None = None
    # Whether the order waits for an operator (absent from older histories: not known then).
    flagged: bool = False


class RefundFailure(Contract):
    refund: RefundOrder
    reason: str


class OrderEnding(Contract):
    order_id: str
    status: Literal[OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.SUPERSEDED]
    reason: str
    # Why an operator should look at it, when the ending was not clean.
    flag: str | None = None


class DeadlineExtension(Contract):
    """An operator moves a pending order's payment deadline later."""

    until: datetime
    note: str | None = None


class RefundRetry(Contract):
    """An operator asks for a refund the gateway refused to be tried again."""

    note: str | None = None


class Resolution(Contract):
    """An operator settles a flagged order: refund its payment, or accept it as it is."""

    action: Literal["refund", "accept"]
    note: str


class OperatorAction(Contract):
    """An operator's action on an order, as the store records it."""

    order_id: str
    action: Literal["cancel", "extend_deadline", "retry_refund", "refund", "accept"]
    note: str | None = None
    until: datetime | None = None


class RefundReopening(Contract):
    refund: RefundOrder
    action: OperatorAction


class Reconciliation(Contract):
    """Look for what no saga has brought to its end although it had this long to."""

    older_than_seconds: int


class OrderRef(Contract):
    """An order as the workflows that concern it are labelled."""

    order_id: str
    reservation_id: str
    kind: OrderKind
    gateway: Gateway
    # Until when its trade takes payments, where that is known.
    payable_until: datetime | None = None


class Findings(Contract):
    """What a reconciliation run found left undone."""

    # Pending past their deadline: their saga may be gone.
    overdue_orders: list[OrderRef]
    # Recorded (and so acknowledged) but not decided by any saga.
    undecided_payments: list[PaymentNotice]
    # Decided to be refunded, but the gateway has not confirmed it yet.
    open_refunds: list[PaymentNotice]
    flagged_orders: list[OrderRef]


class Finding(Contract):
    kind: Literal["overdue_order", "undecided_payment", "open_refund", "flagged_order"]
    order_id: str
    trade_no: str | None = None
    action: str


class ReconciliationReport(Contract):
    workflow_run_id: str
    started_at: datetime
    finished_at: datetime
    findings: list[Finding]


class OrderOutcome(Contract):
    order_id: str
    status: OrderStatus


class WebhookRun(Contract):
    """An endpoint's events of one order, delivered one at a time in the order they happened.
    No secret and no event body: the activities read them from the database."""

    endpoint_id: str
    order_id: str
    # The first retry's wait, doubled at each retry, and how long after the first attempt the
    # delivery is given up.
    retry_initial_seconds: float
    give_up_seconds: int


class PendingDelivery(Contract):
    delivery_id: str
    event_id: str
    event_type: EventType


class DeliveryEnd(Contract):
    """Why a delivery is over: the receiver took it (2xx), said its endpoint is gone (410),
    or it was no longer pending (cancelled, its endpoint disabled) when its turn came."""

    outcome: Literal["delivered", "gone", "not_pending"]
