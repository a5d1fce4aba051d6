"""Orders made straight in the database, as a saga's claim makes them, for tests that need one
without running a saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from core.contracts import ClaimRequest, OrderRequest
from core.vocabulary import Gateway, PaymentTiming
from store import orders
from store.db import transaction

# What a day costs by default (PAYSAGA_PRICE_PER_DAY 9.90).
DAY_CENTS = 990
# How long a trade stays payable past its order's deadline by default
# (PAYSAGA_DEADLINE_EXTENSION_SECONDS 3600).
TRADE_EXTENSION = timedelta(hours=1)


def order_request(
    order_id: str,
    *,
    reservation: str = "room-1",
    days: int = 3,
    gateway: Gateway = Gateway.ALIPAY,
    **timing: int,
) -> OrderRequest:
    """What the API asks a saga for, at the default price; `timing` sets its seconds
    (payment_timeout_seconds, late_payment_horizon_seconds, …)."""
    seconds = {"payment_timeout_seconds": 900, "payment_create_timeout_seconds": 20, **timing}
    return OrderRequest(
        order_id=order_id,
        reservation_id=reservation,
        days=days,
        amount_cents=DAY_CENTS * days,
        currency="CNY",
        gateway=gateway,
        request_fingerprint="f",
        **seconds,
    )


def claim(
    engine: Engine,
    order_id: str,
    *,
    reservation: str = "room-1",
    days: int = 3,
    now: datetime | None = None,
    gateway: Gateway = Gateway.ALIPAY,
    payment: PaymentTiming = PaymentTiming.IMMEDIATE,
) -> list[str]:
    """Claim `reservation` for a new pending order, payable (or, deferred, quoted) for 15
    minutes, its trade (if it has one yet) for an hour more; the ids of the orders it
    superseded."""
    now = datetime.now(UTC) if now is None else now
    request = order_request(order_id, reservation=reservation, days=days, gateway=gateway)
    request = request.model_copy(update={"payment": payment})
    expires_at = now + timedelta(minutes=15)
    traded = payment == PaymentTiming.IMMEDIATE
    with transaction(engine) as session:
        result = orders.claim_reservation(
            session,
            request=ClaimRequest(
                order=request,
                expires_at=expires_at,
                payable_until=expires_at + TRADE_EXTENSION if traded else None,
            ),
            now=now,
        )
    return result.superseded_order_ids
