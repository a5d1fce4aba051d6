"""The gateway activities against the sandbox over loopback HTTP, where more than one worker
takes part in one trade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from activities.payments import PaymentActivities
from core.contracts import PaymentRequest
from core.vocabulary import Gateway
from gateways.registry import payment_gateways
from tests.interop import World, interop_world, order_number


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with interop_world(tmp_path_factory.mktemp("payment_activities")) as world:
        yield world


def worker(world: World, name: str) -> PaymentActivities:
    """A worker's gateway activities, configured with a public URL of its own."""
    settings = world.settings.model_copy(update={"public_base_url": world.notify_url(name)})
    return PaymentActivities(payment_gateways(settings, world.http))


@pytest.mark.parametrize("gateway", list(Gateway))
async def test_a_trade_made_again_by_another_worker_is_the_same_trade(
    world: World, gateway: Gateway
) -> None:
    # The first attempt made the trade but its answer was lost; another worker, configured
    # with another public URL, makes it again. The notify_url fixed when the order was taken
    # goes with both: WeChat Pay refuses an order placed again with another one.
    request = PaymentRequest(
        gateway=gateway,
        order_id=order_number("o"),
        amount_cents=2970,
        subject="Reservation room-1: 3 days",
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        notify_url=world.notify_url("order-taken"),
    )
    qr_code = await worker(world, "worker-0").create_payment(request)
    assert await worker(world, "worker-1").create_payment(request) == qr_code

    # Paid, it is notified where the order said, not to either worker's own URL.
    await world.buyer("pay", request.order_id)
    notified = await world.inbox.next("order-taken")
    assert notified.body
