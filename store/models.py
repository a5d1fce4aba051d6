"""Tables. Money is integer cents; times are timezone-aware UTC on every database."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Index, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, also on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: paysaga stores UTC-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_field(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class PaymentStatus(StrEnum):
    RECEIVED = "received"  # recorded, not yet decided
    ACCEPTED = "accepted"  # counts as its order's payment
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"  # the gateway refused: an operator must act


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Reservation(SQLModel, table=True):
    __tablename__ = "reservations"

    id: str = Field(primary_key=True, max_length=64)
    valid_until: datetime | None = utc_field(nullable=True)
    # The one order that may be paid right now; claims and settlements change it under lock.
    payable_order_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class Order(SQLModel, table=True):
    __tablename__ = "orders"

    id: str = Field(primary_key=True, max_length=64)
    reservation_id: str = Field(foreign_key="reservations.id", index=True, max_length=64)
    kind: str = Field(max_length=16)
    days: int
    amount_cents: int
    currency: str = Field(max_length=3)
    status: str = Field(index=True, max_length=16)
    status_reason: str | None = Field(default=None, max_length=500)
    superseded_by: str | None = Field(default=None, max_length=64)
    gateway: str = Field(max_length=16)
    qr_code: str | None = Field(default=None, max_length=500)
    request_fingerprint: str = Field(max_length=64)
    flag_reason: str | None = Field(default=None, max_length=500)
    # A deferred order has no trade (nor QR code) until the buyer chooses to pay; until then
    # `expires_at` is when its quote lapses, and afterwards its payment deadline.
    payment: str = Field(
        default="immediate", max_length=16, sa_column_kwargs={"server_default": "immediate"}
    )
    # The checkout page's capability: the order id alone opens nothing. Older orders have none.
    checkout_token: str | None = Field(default=None, max_length=64)
    # Where the checkout page sends the buyer once the order is paid.
    return_url: str | None = Field(default=None, max_length=2000)
    expires_at: datetime = utc_field()
    # Until when the gateway takes a payment for the order's trade (the expiry it was made
    # with, past any deadline an operator may move to): None before the trade is made, and for
    # orders made before this was kept.
    payable_until: datetime | None = utc_field(nullable=True)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class Payment(SQLModel, table=True):
    """One row per gateway trade, however many notifications told of it."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("gateway", "trade_no"),)

    id: int | None = Field(default=None, primary_key=True)
    gateway: str = Field(max_length=16)
    trade_no: str = Field(max_length=64)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=64)
    amount_cents: int
    status: str = Field(max_length=16)
    paid_at: datetime | None = utc_field(nullable=True)
    # When a notification of it was handed to a saga: a repeat of the notification after that
    # is not handed on again (it would only lengthen the saga's history).
    handed_over_at: datetime | None = utc_field(nullable=True)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class Refund(SQLModel, table=True):
    """At most one refund per trade: its number is the gateway's idempotency key."""

    __tablename__ = "refunds"

    # Numbers are unique at one gateway; two gateways may, in principle, use the same one.
    gateway: str = Field(primary_key=True, max_length=16)
    refund_no: str = Field(primary_key=True, max_length=64)
    payment_id: int = Field(foreign_key="payments.id", unique=True)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=64)
    amount_cents: int
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = utc_field()
    completed_at: datetime | None = utc_field(nullable=True)


class OperatorActionRecord(SQLModel, table=True):
    """What an operator did to an order, with their note: the audit trail of human decisions."""

    __tablename__ = "operator_actions"

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=64)
    action: str = Field(max_length=32)
    note: str | None = Field(default=None, max_length=500)
    # The new deadline, for an extension.
    until: datetime | None = utc_field(nullable=True)
    at: datetime = utc_field()


class CreationVerdict(StrEnum):
    MADE = "made"  # the order was claimed: it exists, with its QR code
    ABANDONED = "abandoned"  # the API answered that no order was made: it never will be


class OrderCreation(SQLModel, table=True):
    """Whether an order was made, decided once by whichever comes first: its saga's claim or the
    API giving up on it. So an order the API answered 503 for can never appear later."""

    __tablename__ = "order_creations"

    order_id: str = Field(primary_key=True, max_length=64)
    verdict: str = Field(max_length=16)
    decided_at: datetime = utc_field()


class CallbackAttempt(SQLModel, table=True):
    """Every callback received, accepted or not: the audit trail of the gateway's word."""

    __tablename__ = "callback_attempts"

    id: int | None = Field(default=None, primary_key=True)
    gateway: str = Field(max_length=16)
    notify_id: str | None = Field(default=None, index=True, max_length=128)
    out_trade_no: str | None = Field(default=None, index=True, max_length=64)
    trade_no: str | None = Field(default=None, max_length=64)
    trade_status: str | None = Field(default=None, max_length=32)
    outcome: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    body: str = Field(max_length=16384)
    received_at: datetime = utc_field()


class SeenNonce(SQLModel, table=True):
    """Signature nonces, kept while their timestamps are fresh: a second request with the same
    nonce in the same scope (a gateway's callbacks, one client's requests) is a replay. In the
    database, so that every API process sees it."""

    __tablename__ = "seen_nonces"

    scope: str = Field(primary_key=True, max_length=64)
    nonce: str = Field(primary_key=True, max_length=64)
    seen_at: datetime = utc_field(index=True)


class CallbackRefusal(SQLModel, table=True):
    """Refused callbacks, one row per gateway and distinct reason, however often it repeats: a
    flood of forged or replayed callbacks costs a counter, not a row each."""

    __tablename__ = "callback_refusals"

    gateway: str = Field(primary_key=True, max_length=16)
    # SHA-256 of the reason: reasons may be long, and only their identity matters here.
    reason_hash: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=500)
    count: int
    # The first body refused for this reason, as it came, for whoever looks into it.
    sample_body: str = Field(max_length=16384)
    first_seen: datetime = utc_field()
    last_seen: datetime = utc_field()


class GatewayBreaker(SQLModel, table=True):
    """Whether new orders may go to a gateway: workers open it when the gateway's calls fail
    too often, and close it when a probe gets through; every API process reads it."""

    __tablename__ = "gateway_breakers"

    gateway: str = Field(primary_key=True, max_length=16)
    open: bool
    reason: str | None = Field(default=None, max_length=500)
    changed_at: datetime = utc_field()


class ReconciliationRun(SQLModel, table=True):
    """What one reconciliation run found and did: its report, for operators."""

    __tablename__ = "reconciliation_runs"

    id: int | None = Field(default=None, primary_key=True)
    # The run's own workflow run id: a retried recording writes no second row.
    workflow_run_id: str = Field(unique=True, max_length=64)
    started_at: datetime = utc_field(index=True)
    finished_at: datetime = utc_field()
    findings: int
    # The findings, as JSON: kind, order, trade and what was done about each.
    report: str = Field(sa_type=Text)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # decided, not yet taken by the receiver: being delivered
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # no 2xx within the retry span, or the receiver answered 410
    CANCELLED = "cancelled"  # its endpoint was disabled before it was delivered


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver wants no more, and its endpoint is disabled
    REFUSED = "refused"  # any other status code
    TIMEOUT = "timeout"  # no answer in time
    UNREACHABLE = "unreachable"  # no connection: refused, unknown host, TLS


class WebhookEndpoint(SQLModel, table=True):
    """Where the business's app is sent events, and the secrets that sign them, sealed: a copy
    of the database reveals no secret."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=1000)
    # The event types it is sent, comma-separated.
    events: str = Field(max_length=500)
    enabled: bool
    disabled_reason: str | None = Field(default=None, max_length=500)
    # The signing secret, sealed (AES-256-GCM) under the payload codec's key `secret_key_id`
    # and bound to this endpoint's id, in base64.
    secret_sealed: str = Field(max_length=200)
    secret_key_id: str = Field(max_length=64)
    # The secret a rotation replaced: it still signs, beside the new one, until then.
    previous_secret_sealed: str | None = Field(default=None, max_length=200)
    previous_secret_key_id: str | None = Field(default=None, max_length=64)
    previous_secret_until: datetime | None = utc_field(nullable=True)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class WebhookEvent(SQLModel, table=True):
    """An event, decided in the transaction of the change it tells of: the body every endpoint
    subscribed to it is sent, byte for byte, at every attempt."""

    __tablename__ = "webhook_events"

    # An order's events are numbered in the order their transactions committed: each of them
    # held the order's reservation lock until its commit.
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=64)
    type: str = Field(max_length=32)
    # The order it tells of, or whose payment moved the reservation it tells of.
    order_id: str = Field(max_length=64)
    reservation_id: str = Field(max_length=64)
    body: str = Field(sa_type=Text)
    created_at: datetime = utc_field()


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, from its decision until the receiver takes it (or never will)."""

    __tablename__ = "webhook_deliveries"
    # An endpoint's next pending delivery of an order, by event number: what its delivery
    # workflow asks for after each one.
    __table_args__ = (
        Index("ix_webhook_deliveries_next", "endpoint_id", "order_id", "status", "event_seq"),
    )

    id: str = Field(primary_key=True, max_length=64)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", index=True, max_length=64)
    event_seq: int = Field(foreign_key="webhook_events.seq")
    order_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    # When the relay is due to hand it to its delivery workflow (again, should a relay die
    # before it said it had); None once handed over.
    dispatch_due_at: datetime | None = utc_field(nullable=True, index=True)
    created_at: datetime = utc_field()
    finished_at: datetime | None = utc_field(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    """One POST of a delivery to its endpoint, and what came of it."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", index=True, max_length=64)
    at: datetime = utc_field()
    outcome: str = Field(max_length=16)
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int
