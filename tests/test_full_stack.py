"""The whole system over real HTTP: the business's app on one side, the sandbox's Alipay and
WeChat Pay halves on the other, and paysaga's own processes — Temporal dev server, workers,
APIs — in between. Scenarios that take a `gateway` run once on each gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlmodel import col, select
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from api.app import create_app
from core.contracts import Reconciliation
from core.settings import (
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
    Settings,
)
from core.vocabulary import RECONCILE_WORKFLOW_ID, EventType, Gateway, order_workflow_id
from gateways.alipay_signing import (
    NOTIFICATION_UNSIGNED,
    load_private_key,
    signing_string,
)
from paysaga.temporal_server import installed_binary
from paysaga.worker import WORKFLOWS
from stack.notifications import (
    Callback,
    alipay_callback,
    paid_trade_notification,
    wechatpay_callback,
)
from stack.ports import free_port
from stack.system import ADMIN_KEY, API_KEY, TASK_QUEUE, System
from store.db import create_db_engine, transaction
from store.models import CallbackAttempt, CallbackRefusal
from tests.history_paths import all_histories, record_distinct_paths
from tests.rig import Sandbox
from tests.servers import serving
from tests.system import DATABASE_KIND, Shop
from tests.test_callback_door import signed
from tests.webhook_receiver import Receiver
from workflows.reconcile import ReconcileWorkflow

pytestmark = pytest.mark.slow
# How each gateway calls a trade that was closed unpaid.
CLOSED = {Gateway.ALIPAY: "TRADE_CLOSED", Gateway.WECHATPAY: "CLOSED"}
# Each gateway's call that creates a QR payment, as the sandbox's fault switch names it.
CREATE_METHOD = {Gateway.ALIPAY: "alipay.trade.precreate", Gateway.WECHATPAY: "wechatpay.native"}


@pytest.fixture(params=list(Gateway))
def gateway(request: pytest.FixtureRequest) -> Gateway:
    """The scenario runs once on each gateway."""
    value: Gateway = request.param
    return value


@pytest.fixture(autouse=True)
async def healthy_sandbox(sandbox: Sandbox) -> AsyncIterator[None]:
    yield
    (await sandbox.http.delete(f"{sandbox.url}/sandbox/faults")).raise_for_status()


async def all_delivered(sandbox: Sandbox, out_trade_no: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await sandbox.delivered(out_trade_no):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"notifications of {out_trade_no} were not all acknowledged")


def reservation() -> str:
    return f"res-{uuid.uuid4().hex[:12]}"


def money(value: str) -> Decimal:
    return Decimal(value)


async def conserved(shop: Shop, sandbox: Sandbox, reservation_id: str) -> Decimal:
    """Checks captured − refunded = paid orders, by paysaga's books and by the gateway's;
    returns that amount."""
    view = await shop.get(f"/v1/reservations/{reservation_id}")
    orders = [await shop.get(f"/v1/orders/{o['order_id']}") for o in view["orders"]]
    captured = sum((money(p["amount"]) for o in orders for p in o["payments"]), Decimal(0))
    refunded = sum(
        (money(r["amount"]) for o in orders for r in o["refunds"] if r["status"] == "succeeded"),
        Decimal(0),
    )
    paid = sum((money(o["amount"]) for o in orders if o["status"] == "paid"), Decimal(0))
    assert captured - refunded == paid
    assert await sandbox.net_captured([o["order_id"] for o in orders]) == paid
    return paid


async def test_a_booking_is_paid_and_activates_the_reservation(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    room = reservation()
    order = await shop.order(room, 3, gateway=gateway)
    assert order["kind"] == "booking" and order["status"] == "pending"
    assert (order["amount"], order["currency"], order["gateway"]) == ("29.70", "CNY", gateway)
    assert order["qr_code"].startswith(sandbox.url)
    assert datetime.fromisoformat(order["expires_at"]).utcoffset() == timedelta(0)

    await sandbox.pay(order["order_id"])
    paid = await shop.settled(order["order_id"], "paid")
    assert [(p["amount"], p["status"]) for p in paid["payments"]] == [("29.70", "accepted")]
    view = await shop.get(f"/v1/reservations/{room}")
    assert view["status"] == "active" and view["payable_order_id"] is None
    assert await conserved(shop, sandbox, room) == Decimal("29.70")


async def test_a_renewal_extends_the_reservation(shop: Shop, sandbox: Sandbox) -> None:
    room = reservation()
    booking = await shop.order(room, 1, gateway=Gateway.ALIPAY)
    await sandbox.pay(booking["order_id"])
    await shop.settled(booking["order_id"], "paid")
    before = datetime.fromisoformat((await shop.get(f"/v1/reservations/{room}"))["valid_until"])

    # One reservation may be paid on either gateway, order by order.
    renewal = await shop.order(room, 2, api=1, gateway=Gateway.WECHATPAY)
    assert renewal["kind"] == "renewal" and renewal["amount"] == "19.80"
    await sandbox.pay(renewal["order_id"])
    await shop.settled(renewal["order_id"], "paid")
    after = datetime.fromisoformat((await shop.get(f"/v1/reservations/{room}"))["valid_until"])
    assert after - before == timedelta(days=2)


async def test_a_newer_window_on_another_gateway_supersedes_and_refunds_on_the_first(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    """The older order is on `gateway`, the newer on the other one; the older order's trade is
    closed, and its payment is refunded on the gateway that captured it."""
    other = next(g for g in Gateway if g != gateway)
    room = reservation()
    first = await shop.order(room, gateway=gateway)
    await sandbox.scan(first["order_id"])
    # The buyer pays the older window in the very instant the newer one closes it.
    await sandbox.faults(pay_before_close=True)
    second = await shop.order(room, api=1, gateway=other)
    refunded = await shop.settled(first["order_id"], "refunded")
    assert refunded["status_reason"] and "superseded" in refunded["status_reason"]
    assert [(r["amount"], r["status"]) for r in refunded["refunds"]] == [("29.70", "succeeded")]
    trade = await sandbox.trade(first["order_id"])
    assert trade["gateway"] == gateway and len(trade["refunds"]) == 1

    await sandbox.pay(second["order_id"])
    await shop.settled(second["order_id"], "paid")
    assert (await sandbox.trade(second["order_id"]))["gateway"] == other
    assert await conserved(shop, sandbox, room) == Decimal("29.70")


async def test_a_payment_notified_after_its_order_ended_is_refunded_once(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    room = reservation()
    first = await shop.order(room, gateway=gateway)
    await sandbox.scan(first["order_id"])
    # Paid as a newer order closes it, and told late and thrice: the saga finds the payment
    # when it closes the trade, and the notifications reach a saga that has ended.
    await sandbox.faults(
        pay_before_close=True, notification_delay_seconds=2.0, duplicate_notifications=3
    )
    await shop.order(room, api=1, gateway=gateway)
    refunded = await shop.settled(first["order_id"], "refunded")
    await all_delivered(sandbox, first["order_id"], seconds=20)
    again = await shop.settled(first["order_id"], "refunded")
    assert len(again["payments"]) == len(again["refunds"]) == 1
    assert again["refunds"] == refunded["refunds"]
    assert len((await sandbox.trade(first["order_id"]))["refunds"]) == 1
    assert await conserved(shop, sandbox, room) == Decimal(0)


async def test_a_qr_code_paid_after_expiry_is_refunded_once(shop: Shop, sandbox: Sandbox) -> None:
    # An Alipay QR code nobody scanned has no trade to close: it can still be paid later.
    room = reservation()
    order = await shop.order(room, api=2, gateway=Gateway.ALIPAY)
    await shop.until(order["order_id"], lambda o: o["status"] == "expired", seconds=30)

    # The buyer pays the stale QR code anyway, and Alipay tells us three times at once.
    await sandbox.faults(accept_expired_qr=True, duplicate_notifications=3)
    await sandbox.pay(order["order_id"])
    late = await shop.settled(order["order_id"], "refunded")
    assert len(late["payments"]) == 1 and len(late["refunds"]) == 1
    assert len((await sandbox.trade(order["order_id"]))["refunds"]) == 1
    assert await conserved(shop, sandbox, room) == Decimal(0)


async def test_twenty_duplicate_notifications_make_one_payment(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    room = reservation()
    order = await shop.order(room, gateway=gateway)
    await sandbox.faults(duplicate_notifications=20)
    await sandbox.pay(order["order_id"])
    paid = await shop.settled(order["order_id"], "paid")
    assert len(paid["payments"]) == 1 and paid["refunds"] == []

    await all_delivered(sandbox, order["order_id"])
    assert await conserved(shop, sandbox, room) == Decimal("29.70")


async def test_twenty_concurrent_windows_on_both_gateways_leave_one_paid(
    shop: Shop, sandbox: Sandbox
) -> None:
    room = reservation()
    gateways = list(Gateway)
    # Buyers pay every window: each superseded one in the instant its trade is closed (a
    # closed WeChat Pay trade can no longer be paid), the payable one once they are all made.
    await sandbox.faults(pay_before_close=True)
    created = await asyncio.gather(
        *(
            shop.order(room, 1, api=n % 2, gateway=gateways[(n // 2) % len(gateways)])
            for n in range(20)
        )
    )
    ids = [order["order_id"] for order in created]
    view = await shop.get(f"/v1/reservations/{room}")
    assert view["payable_order_id"] in ids

    payable = view["payable_order_id"]
    superseded = [
        await shop.settled(order_id, "refunded", seconds=60)
        for order_id in ids
        if order_id != payable
    ]
    assert all("superseded" in (order["status_reason"] or "") for order in superseded)
    assert (await shop.get(f"/v1/orders/{payable}"))["status"] == "pending"

    await sandbox.pay(payable)
    final = [*superseded, await shop.settled(payable, "paid")]
    assert sorted(order["status"] for order in final) == ["paid"] + ["refunded"] * 19
    # Each refund went back through the gateway that captured the payment.
    for order in final:
        trade = await sandbox.trade(order["order_id"])
        assert trade["gateway"] == order["gateway"]
        assert len(trade["refunds"]) == (order["status"] == "refunded")
    assert {order["gateway"] for order in final} == set(Gateway)
    assert await conserved(shop, sandbox, room) == Decimal("9.90")


async def test_a_cancelled_order_closes_its_trade(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    order = await shop.order(reservation(), gateway=gateway)
    await sandbox.scan(order["order_id"])
    response = await shop.http.post(
        f"{shop.system.api_urls[1]}/v1/orders/{order['order_id']}/cancel"
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert (await sandbox.trade(order["order_id"]))["status"] == CLOSED[gateway]
    again = await shop.http.post(f"{shop.system.api_urls[0]}/v1/orders/{order['order_id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


async def test_a_deferred_order_gets_its_trade_on_pay_and_a_stale_page_gets_none(
    shop: Shop, sandbox: Sandbox
) -> None:
    room = reservation()
    response = await shop.create(
        room, 2, payment="deferred", return_url="https://shop.example/thanks"
    )
    assert response.status_code == 201, response.text
    old = response.json()
    assert (old["payment"], old["qr_code"], old["status"]) == ("deferred", None, "pending")
    assert old["return_url"] == "https://shop.example/thanks"
    token = old["checkout_url"].partition("?token=")[2]
    assert (
        old["checkout_url"] == (f"{shop.system.api_urls[0]}/pay/{old['order_id']}?token={token}")
        and len(token) >= 32
    )

    anonymous = httpx.AsyncClient(timeout=30)
    async with anonymous:
        pay = f"{shop.system.api_urls[1]}/v1/orders/{old['order_id']}/payment"
        # The order id alone opens nothing; nor does a wrong token, nor no credential at all.
        assert (await anonymous.post(pay)).status_code == 401
        wrong = await anonymous.post(pay, headers={"X-Checkout-Token": token[:-1] + "x"})
        assert wrong.status_code == 404
        newer = await shop.order(room, 2, api=1)
        stale = await anonymous.post(pay, headers={"X-Checkout-Token": token})
        assert stale.status_code == 409, stale.text
        assert stale.json()["amount"] == "19.80" and "superseded" in stale.json()["detail"]
        assert not await sandbox.knows(old["order_id"])

        # A new quote, paid through its page: the trade and the QR code come only now.
        quoted = (await shop.create(room, 1, payment="deferred", api=1)).json()
        assert quoted["qr_code"] is None
        assert (await shop.get(f"/v1/orders/{newer['order_id']}"))["status"] == "superseded"
        page_token = quoted["checkout_url"].partition("?token=")[2]
        paying = f"{shop.system.api_urls[0]}/v1/orders/{quoted['order_id']}/payment"
        presses = await asyncio.gather(
            *(anonymous.post(paying, headers={"X-Checkout-Token": page_token}) for _ in range(2))
        )
    assert [press.status_code for press in presses] == [200, 200], presses[0].text
    first, second = (press.json() for press in presses)
    assert first["qr_code"] and first["qr_code"] == second["qr_code"]
    # The deadline now runs from the trade, no longer from the quote.
    assert first["expires_at"] != quoted["expires_at"]
    await sandbox.pay(quoted["order_id"])
    await shop.settled(quoted["order_id"], "paid")
    assert await conserved(shop, sandbox, room) == Decimal("9.90")


def alipay_form(key: rsa.RSAPrivateKey, **fields: str) -> dict[str, str]:
    """A notification as Alipay sends it, signed with `key`, as form fields."""
    return dict(parse_qsl(alipay_callback(key, **fields).body.decode()))


async def lost_notification(
    shop: Shop, sandbox: Sandbox, system: System, gateway: Gateway, **changes: Any
) -> tuple[dict[str, Any], Callback]:
    """An order paid at the gateway whose notification the gateway lost, and that notification
    as the gateway signs it (with `changes`), for the test to deliver itself."""
    order = await shop.order(reservation(), gateway=gateway)
    await sandbox.faults(drop_notifications=1)
    trade = await sandbox.pay(order["order_id"])
    return order, paid_trade_notification(system.keys_dir, gateway, trade, **changes)


async def test_forged_and_malformed_callbacks_change_nothing(shop: Shop, system: System) -> None:
    order = await shop.order(reservation())
    callback = f"{system.api_urls[0]}/v1/callbacks/alipay"
    alipay_key = load_private_key(system.keys_dir / "sandbox_private.pem")
    forger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tallied_before = refusals_tallied(system)
    seen_before = {attempt.id for attempt in attempts_recorded(system)}

    forged = alipay_form(forger_key, out_trade_no=order["order_id"])
    response = await shop.http.post(callback, data=forged)
    assert response.status_code == 400 and "signature" in response.json()["detail"]

    tampered = alipay_form(alipay_key, out_trade_no=order["order_id"])
    tampered["total_amount"] = "0.01"
    assert (await shop.http.post(callback, data=tampered)).status_code == 400

    sha1 = alipay_form(alipay_key, out_trade_no=order["order_id"], sign_type="RSA")
    message = signing_string(sha1, unsigned=NOTIFICATION_UNSIGNED).encode()
    sha1["sign"] = base64.b64encode(
        alipay_key.sign(message, padding.PKCS1v15(), hashes.SHA1())
    ).decode()
    response = await shop.http.post(callback, data=sha1)
    assert response.status_code == 400 and "RSA2" in response.json()["detail"]

    unknown = alipay_form(alipay_key, out_trade_no="ord_nobody")
    response = await shop.http.post(callback, data=unknown)
    assert response.status_code == 404 and "ord_nobody" in response.json()["detail"]

    response = await shop.http.post(
        callback, content=b"%%%not a form", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400

    unchanged = await shop.get(f"/v1/orders/{order['order_id']}")
    assert unchanged["status"] == "pending" and unchanged["payments"] == []
    # Each refusal was tallied under its reason, what the caller chose left out; none of them
    # became a row of the audit trail.
    assert refusals_tallied(system) - tallied_before == {
        ("alipay", "signature does not verify"): 2,
        ("alipay", "sign_type … is not accepted, RSA2 only"): 1,
        ("alipay", "no order …"): 1,
        ("alipay", "body is not a utf-8 form"): 1,
    }
    assert not [
        attempt
        for attempt in attempts_recorded(system)
        if attempt.id not in seen_before
        and attempt.out_trade_no in (order["order_id"], "ord_nobody")
    ]


async def test_forged_replayed_and_malformed_wechatpay_callbacks_change_nothing(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    order, genuine = await lost_notification(shop, sandbox, system, Gateway.WECHATPAY)
    trade = await sandbox.trade(order["order_id"])
    keys = system.keys_dir
    platform_key = load_private_key(keys / "wechatpay_platform_private.pem")
    apiv3_key = (keys / "wechatpay_apiv3.key").read_bytes().strip()
    resource = {"appid": SANDBOX_WECHATPAY_APPID, "mchid": SANDBOX_WECHATPAY_MCHID}
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tallied_before = refusals_tallied(system)
    seen_before = {attempt.id for attempt in attempts_recorded(system)}

    def altered(**headers: str) -> Callback:
        return Callback({**genuine.headers, **headers}, genuine.body)

    cases: list[tuple[str, Callback, int, str]] = [
        (
            "forged",
            wechatpay_callback(
                forger,
                key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
                apiv3_key=apiv3_key,
                resource=resource,
            ),
            400,
            "signature",
        ),
        ("unknown key", altered(**{"Wechatpay-Serial": "PUB_KEY_ID_UNKNOWN"}), 400, "serial"),
        (
            "probe",
            altered(**{"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 300}),
            400,
            "",
        ),
        (
            "stale",
            wechatpay_callback(
                platform_key,
                key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
                apiv3_key=apiv3_key,
                resource=resource,
                timestamp=int(time.time()) - 301,
            ),
            400,
            "",
        ),
        (
            "bad AES tag",
            wechatpay_callback(
                platform_key,
                key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
                apiv3_key=bytes(32),
                resource=resource,
            ),
            400,
            "",
        ),
        (
            "unknown order",
            paid_trade_notification(
                system.keys_dir, Gateway.WECHATPAY, {**trade, "out_trade_no": "ord_nobody"}
            ),
            404,
            "ord_nobody",
        ),
        # The genuine headers over a body they do not sign.
        ("malformed", Callback(genuine.headers, b"{not json"), 400, ""),
    ]
    for name, callback, status, said in cases:
        response = await shop.notify(system.api_urls[0], Gateway.WECHATPAY, callback)
        assert response.status_code == status, (name, response.text)
        assert response.json()["code"] == "FAIL", name
        assert said in response.json()["message"], (name, response.text)

    # The genuine notification is taken once; the same request again is a replay.
    first = await shop.notify(system.api_urls[0], Gateway.WECHATPAY, genuine)
    assert (first.status_code, first.content) == (204, b"")
    replayed = await shop.notify(system.api_urls[1], Gateway.WECHATPAY, genuine)
    assert replayed.status_code == 400 and "replay" in replayed.json()["message"]

    # Refusals are tallied by reason, never kept one row each; the payment is in the audit trail.
    assert refusals_tallied(system) - tallied_before == {
        ("wechatpay", "signature does not verify"): 2,
        ("wechatpay", "wechatpay-serial … names no key of ours"): 1,
        ("wechatpay", "signature is WeChat Pay's probe, which must fail"): 1,
        ("wechatpay", "wechatpay-timestamp … is 5 minutes or more from now"): 1,
        ("wechatpay", "resource: ciphertext does not decrypt with our APIv3 key"): 1,
        ("wechatpay", "no order …"): 1,
        ("wechatpay", "nonce … was seen before: a replay"): 1,
    }
    # Other tests' notifications may still be arriving: only this one's attempts count.
    recorded = [
        (a.gateway, a.outcome)
        for a in attempts_recorded(system)
        if a.id not in seen_before and a.out_trade_no in (order["order_id"], "ord_nobody")
    ]
    assert recorded == [(Gateway.WECHATPAY, "payment")]
    paid = await shop.settled(order["order_id"], "paid")
    assert len(paid["payments"]) == 1


def attempts_recorded(system: System) -> list[CallbackAttempt]:
    engine = create_db_engine(system.database_url)
    try:
        with transaction(engine) as session:
            return list(session.exec(select(CallbackAttempt).order_by(col(CallbackAttempt.id))))
    finally:
        engine.dispose()


def refusals_tallied(system: System) -> Counter[tuple[str, str]]:
    """How often each gateway's callbacks were refused, by reason."""
    engine = create_db_engine(system.database_url)
    try:
        with transaction(engine) as session:
            refusals = session.exec(select(CallbackRefusal)).all()
            return Counter({(r.gateway, r.reason): r.count for r in refusals})
    finally:
        engine.dispose()


async def test_stale_prices_bad_input_and_strangers_are_refused(shop: Shop) -> None:
    room = reservation()
    stale = await shop.create(room, 3, expected_amount="19.80")
    assert stale.status_code == 409
    assert stale.json()["amount"] == "29.70" and "price" in stale.json()["detail"]
    missing = await shop.http.get(f"{shop.system.api_urls[0]}/v1/reservations/{room}")
    assert missing.status_code == 404  # nothing was created

    for body in (
        {"reservation_id": "a b", "days": 1},
        {"reservation_id": "r", "days": 0},
        {"reservation_id": "r", "days": 366},
        {"reservation_id": "r"},
        {"reservation_id": "r", "days": 1, "gateway": "paypal"},
    ):
        response = await shop.http.post(f"{shop.system.api_urls[0]}/v1/orders", json=body)
        assert response.status_code == 422 and response.json()["detail"]

    unknown = await shop.http.get(f"{shop.system.api_urls[0]}/v1/orders/ord_nobody")
    assert unknown.status_code == 404
    async with httpx.AsyncClient() as stranger:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await stranger.get(
                f"{shop.system.api_urls[0]}/v1/orders/ord_nobody", headers=headers
            )
            assert response.status_code == 401 and response.json()["detail"]


async def test_an_idempotency_key_returns_the_same_order(shop: Shop) -> None:
    room = reservation()
    key = uuid.uuid4().hex
    first, second = await asyncio.gather(
        shop.create(room, 2, idempotency_key=key), shop.create(room, 2, api=1, idempotency_key=key)
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["order_id"] == second.json()["order_id"]
    assert len((await shop.get(f"/v1/reservations/{room}"))["orders"]) == 1
    reused = await shop.create(room, 5, idempotency_key=key)
    assert reused.status_code == 422

    # Retried after the order was cancelled, the POST says so rather than hand a dead order
    # out as created.
    order_id = first.json()["order_id"]
    cancelled = await shop.http.post(f"{shop.system.api_urls[0]}/v1/orders/{order_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    late_retry = await shop.create(room, 2, idempotency_key=key)
    assert late_retry.status_code == 409, late_retry.text
    assert order_id in late_retry.json()["detail"] and "cancelled" in late_retry.json()["detail"]
    for empty_or_long in ("", "k" * 201):
        refused = await shop.create(room, 2, idempotency_key=empty_or_long)
        assert refused.status_code == 422, refused.text


async def test_an_unreachable_gateway_gives_503_and_no_payable_order(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    room = reservation()
    await sandbox.faults(fail_methods={CREATE_METHOD[gateway]: 1000}, fail_mode="http_503")
    response = await shop.create(room, gateway=gateway)
    assert response.status_code == 503 and "gateway" in response.json()["detail"]
    # A 503 means nothing was made: no order, no claim on the reservation.
    nothing = await shop.http.get(f"{shop.system.api_urls[0]}/v1/reservations/{room}")
    assert nothing.status_code == 404, nothing.text


@asynccontextmanager
async def api_without_temporal(system: System) -> AsyncIterator[str]:
    """An API of ours that cannot reach Temporal; yields its URL."""
    async with own_api(system, temporal_address=f"127.0.0.1:{free_port()}") as url:
        yield url


@asynccontextmanager
async def own_api(system: System, **settings: Any) -> AsyncIterator[str]:
    """One more API of ours over the system's database and Temporal, with `settings`."""
    app = create_app(
        Settings(
            **{
                "home": system.keys_dir.parent,
                "database_url": system.database_url,
                "temporal_address": system.temporal_address,
                "task_queue": TASK_QUEUE,
                "api_keys": API_KEY,
                "sandbox_url": system.sandbox_url,
                **settings,
            }
        )
    )
    async with serving(app, free_port()) as url:
        yield url


async def test_a_signed_request_is_taken_once_and_a_busy_client_waits_its_turn(
    shop: Shop, system: System
) -> None:
    body = json.dumps({"reservation_id": reservation(), "days": 1, "gateway": "wechatpay"})
    headers = {
        "Content-Type": "application/json",
        **signed(API_KEY, "POST", "/v1/orders", body.encode()),
    }
    async with httpx.AsyncClient(timeout=30) as client:
        made = await client.post(f"{system.api_urls[0]}/v1/orders", content=body, headers=headers)
        assert made.status_code == 201, made.text
        # Captured and sent again, to this API process or another: the nonce was seen.
        for api_url in system.api_urls:
            again = await client.post(f"{api_url}/v1/orders", content=body, headers=headers)
            assert again.status_code == 401 and "replay" in again.json()["detail"]

    path = f"/v1/orders/{made.json()['order_id']}"
    async with own_api(system, rate_limit_requests=3, rate_limit_window_seconds=2) as url:
        answers = [await shop.http.get(url + path) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        wait = int(answers[-1].headers["Retry-After"])
        assert 1 <= wait <= 2
        await asyncio.sleep(wait)
        assert (await shop.http.get(url + path)).status_code == 200


async def test_without_temporal_nothing_is_made_and_no_payment_is_lost(
    shop: Shop, sandbox: Sandbox, system: System, gateway: Gateway
) -> None:
    order, notification = await lost_notification(shop, sandbox, system, gateway)
    async with api_without_temporal(system) as cut_off:
        refused = await shop.create(reservation(), api_url=cut_off, gateway=gateway)
        assert refused.status_code == 503 and "Temporal" in refused.json()["detail"]
        callback = await shop.notify(cut_off, gateway, notification)
        assert callback.status_code == 503 and callback.text != "success"

    recorded = await shop.get(f"/v1/orders/{order['order_id']}")
    assert [p["status"] for p in recorded["payments"]] == ["received"]  # kept, not yet decided
    # The gateway sends it again (signed anew, as WeChat Pay does), this time to an API that
    # can reach Temporal.
    trade = await sandbox.trade(order["order_id"])
    callback = await shop.notify(
        system.api_urls[1], gateway, paid_trade_notification(system.keys_dir, gateway, trade)
    )
    assert callback.status_code in (200, 204) and callback.text in ("success", "")
    await shop.settled(order["order_id"], "paid")


async def test_repeats_of_a_notification_handed_over_are_not_handed_over_again(
    shop: Shop, sandbox: Sandbox, system: System, gateway: Gateway
) -> None:
    order, _ = await lost_notification(shop, sandbox, system, gateway)
    trade = await sandbox.trade(order["order_id"])
    # No worker runs, the payment stays undecided while the gateway repeats its notification
    # (signed anew each time): each is acknowledged, one reaches the saga. The workers are
    # killed, not stopped: a stopped one can hold SQLite's only write lock, and the door
    # would wait on it.
    system.kill_workers()
    try:
        for n in range(3):
            repeat = paid_trade_notification(system.keys_dir, gateway, trade)
            callback = await shop.notify(system.api_urls[n % 2], gateway, repeat)
            assert callback.status_code in (200, 204), callback.text
    finally:
        system.start_workers()
    await shop.settled(order["order_id"], "paid")
    client = await system.temporal_client()
    history = await client.get_workflow_handle(order_workflow_id(order["order_id"])).fetch_history()
    told = [
        event
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
        and event.workflow_execution_signaled_event_attributes.signal_name == "payment_notified"
    ]
    assert len(told) == 1


async def test_a_lost_notification_is_found_by_asking_the_gateway(
    shop: Shop, sandbox: Sandbox, gateway: Gateway
) -> None:
    room = reservation()
    order = await shop.order(room, api=2, gateway=gateway)
    await sandbox.faults(drop_notifications=1)
    await sandbox.pay(order["order_id"])
    # No notification comes; at the payment timeout the saga asks before it expires the order.
    paid = await shop.settled(order["order_id"], "paid", seconds=30)
    assert [p["status"] for p in paid["payments"]] == ["accepted"]
    notes = (await sandbox.trade(order["order_id"]))["notifications"]
    assert [note["lost"] for note in notes] == [True]
    assert await conserved(shop, sandbox, room) == Decimal("29.70")


async def test_sagas_survive_their_workers_crashing(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    room = reservation()
    first = await shop.order(room)
    second = await shop.order(room, api=1)
    await shop.until(first["order_id"], lambda order: order["status"] == "superseded")

    system.kill_workers()
    try:
        # Both QR codes are paid while no worker runs: the notifications are recorded and
        # handed to the sagas, which wait in Temporal for a worker.
        await asyncio.gather(sandbox.pay(first["order_id"]), sandbox.pay(second["order_id"]))
        await shop.until(
            second["order_id"],
            lambda order: [p["status"] for p in order["payments"]] == ["received"],
        )
        unsettled = await shop.get(f"/v1/orders/{second['order_id']}")
        assert unsettled["status"] == "pending"
        # Nobody can make the QR code: 503, and the order must never appear later either.
        orphan = reservation()
        refused = await shop.create(orphan)
        assert refused.status_code == 503, refused.text
    finally:
        system.start_workers()

    await shop.settled(second["order_id"], "paid")
    await shop.settled(first["order_id"], "refunded")
    assert await conserved(shop, sandbox, room) == Decimal("29.70")
    gone = await shop.http.get(f"{system.api_urls[0]}/v1/reservations/{orphan}")
    assert gone.status_code == 404, gone.text


async def test_trade_finished_is_no_new_payment_and_a_wrong_amount_is_refunded(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    order = await shop.order(reservation())
    await sandbox.pay(order["order_id"])
    await shop.settled(order["order_id"], "paid")
    await sandbox.finish(order["order_id"])  # TRADE_FINISHED: the same trade, told again
    await all_delivered(sandbox, order["order_id"])
    finished = await shop.get(f"/v1/orders/{order['order_id']}")
    assert finished["status"] == "paid" and len(finished["payments"]) == 1
    assert finished["refunds"] == []

    other, wrong = await lost_notification(
        shop, sandbox, system, Gateway.ALIPAY, total_amount="0.01"
    )
    response = await shop.notify(system.api_urls[0], Gateway.ALIPAY, wrong)
    assert (response.status_code, response.text) == (200, "success")
    # A payment of another amount never pays the order: captured, it goes back, and the order
    # (still payable) is flagged once, however often the gateway tells it.
    flagged = await shop.until(
        other["order_id"],
        lambda order: [refund["status"] for refund in order["refunds"]] == ["succeeded"],
    )
    assert flagged["status"] == "pending"
    assert [(p["amount"], p["status"]) for p in flagged["payments"]] == [("0.01", "refunded")]
    assert flagged["flagged"] == "paid 0.01 for an order of 29.70"


async def test_a_payment_made_while_temporal_is_down_is_not_lost(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    room = reservation()
    order = await shop.order(room)
    system.kill_temporal()
    try:
        # Our API records the notification, cannot hand it on, and so does not acknowledge
        # it: the gateway keeps resending.
        await sandbox.pay(order["order_id"])
        recorded = await shop.until(order["order_id"], lambda o: bool(o["payments"]))
        assert recorded["status"] == "pending"
        assert [p["status"] for p in recorded["payments"]] == ["received"]
        notes = (await sandbox.trade(order["order_id"]))["notifications"]
        assert not any(note["delivered"] for note in notes)
        # No order can be made meanwhile, and the API says so once, in its answer.
        orphan = reservation()
        refused = await shop.create(orphan)
        assert refused.status_code == 503 and "Temporal" in refused.json()["detail"]
    finally:
        system.start_temporal()
    await shop.settled(order["order_id"], "paid", seconds=90)
    assert await conserved(shop, sandbox, room) == Decimal("29.70")
    gone = await shop.http.get(f"{system.api_urls[0]}/v1/reservations/{orphan}")
    assert gone.status_code == 404, gone.text
    for log in system.logs.glob("api-*.log"):
        assert "never retrieved" not in log.read_text(), log
    # Back up, it takes new orders again once its task queues have caught up after the restart
    # (every saga still watching over its order has timers to reload): a 503 makes nothing.
    for _ in range(30):
        probe = await shop.create(reservation())
        if probe.status_code == 201:
            break
        await asyncio.sleep(1)
    assert probe.status_code == 201, probe.text


# The database behind a relay the test can cut exists on PostgreSQL only: SQLite is a file
# opened by each process, with no connection to lose. `make test-slow` runs both.
if DATABASE_KIND == "postgresql":

    async def test_a_database_outage_loses_no_payment(
        shop: Shop, sandbox: Sandbox, system: System
    ) -> None:
        assert system.database_proxy is not None
        room = reservation()
        order = await shop.order(room)
        system.database_proxy.cut()
        try:
            await sandbox.pay(order["order_id"])
            for _ in range(100):
                notes = (await sandbox.trade(order["order_id"]))["notifications"]
                if notes and notes[0]["attempts"] >= 2:
                    break
                await asyncio.sleep(0.1)
            assert notes[0]["attempts"] >= 2 and not notes[0]["delivered"]
            assert notes[0]["last_status"].startswith("503")
            outage = await shop.http.get(f"{system.api_urls[0]}/v1/orders/{order['order_id']}")
            assert outage.status_code == 503 and "database" in outage.json()["detail"]
        finally:
            system.database_proxy.start()
        await shop.settled(order["order_id"], "paid", seconds=90)
        assert await conserved(shop, sandbox, room) == Decimal("29.70")


async def test_payments_nobody_handed_on_are_settled_by_reconciliation(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    running, running_notice = await lost_notification(shop, sandbox, system, Gateway.WECHATPAY)
    ended = await shop.order(reservation(), api=2, gateway=Gateway.ALIPAY)
    await shop.until(ended["order_id"], lambda order: order["status"] == "expired")
    await sandbox.faults(accept_expired_qr=True, drop_notifications=1)
    late_trade = await sandbox.pay(ended["order_id"])
    ended_notice = paid_trade_notification(system.keys_dir, Gateway.ALIPAY, late_trade)
    # Recorded, but never handed on, and the gateway gives up: only reconciliation is left.
    async with api_without_temporal(system) as cut_off:
        for gateway, notice in (
            (Gateway.WECHATPAY, running_notice),
            (Gateway.ALIPAY, ended_notice),
        ):
            response = await shop.notify(cut_off, gateway, notice)
            assert response.status_code == 503

    client = await system.temporal_client()
    # The workers keep it on a schedule; here it runs now rather than in five minutes.
    schedule = await client.get_schedule_handle(RECONCILE_WORKFLOW_ID).describe()
    assert [interval.every for interval in schedule.schedule.spec.intervals] == [
        timedelta(minutes=5)
    ]
    report = await client.execute_workflow(
        ReconcileWorkflow.run,
        Reconciliation(older_than_seconds=0),
        id=f"reconcile-now-{uuid.uuid4().hex}",
        task_queue=TASK_QUEUE,
    )
    handed_on = {
        finding.order_id for finding in report.findings if finding.kind == "undecided_payment"
    }
    assert {running["order_id"], ended["order_id"]} <= handed_on
    await shop.settled(running["order_id"], "paid")
    refunded = await shop.settled(ended["order_id"], "refunded")
    assert [r["status"] for r in refunded["refunds"]] == ["succeeded"]


async def test_an_orders_story_is_told_and_operators_act_through_their_door(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    room = reservation()
    old = await shop.order(room, gateway=Gateway.ALIPAY)
    new = await shop.order(room, gateway=Gateway.ALIPAY)
    await shop.settled(old["order_id"], "superseded")
    await sandbox.pay(old["order_id"])  # never scanned: Alipay still takes it after the close
    await shop.settled(old["order_id"], "refunded")
    await all_delivered(sandbox, old["order_id"])

    story = await shop.get(f"/v1/orders/{old['order_id']}/timeline")
    assert story["status"] == "refunded" and story["gaps"] == []
    times = [datetime.fromisoformat(entry["at"]) for entry in story["entries"]]
    assert times == sorted(times)
    told = [(entry["source"], entry["event"], entry["detail"]) for entry in story["entries"]]
    events = [event for _, event, _ in told]
    # The saga creates the payment, then makes the order with it.
    assert told[:4] == [
        ("saga", f"OrderWorkflow order-{old['order_id']} began", None),
        ("gateway", "create the payment at alipay", "QR code issued"),
        ("saga", f"claim reservation {room}", "reservation claimed"),
        ("order", "created, its QR code issued", told[3][2]),
    ]
    assert f"superseded by {new['order_id']}" in events
    assert any(source == "gateway" and event.startswith("close trade") for source, event, _ in told)
    assert any(event.startswith("alipay notified TRADE_SUCCESS") for event in events)
    assert any(event.startswith("refund rf_") and event.endswith("confirmed") for event in events)
    assert any(
        (source, detail) == ("gateway", "refund accepted by the gateway")
        and event.startswith("refund trade ")
        for source, event, detail in told
    )

    # The same story in an operator's terminal, read straight from the database and Temporal.
    shown = subprocess.run(
        [installed_binary("paysaga"), "orders", "show", old["order_id"]],
        env={
            **os.environ,
            "PAYSAGA_HOME": str(system.keys_dir.parent),
            "PAYSAGA_DATABASE_URL": system.database_url,
            "PAYSAGA_TEMPORAL_ADDRESS": system.temporal_address,
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"order {old['order_id']}: refunded" in shown.stdout
    assert f"superseded by {new['order_id']}" in shown.stdout
    assert "refund accepted by the gateway" in shown.stdout

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    door = f"{system.api_urls[1]}/v1/admin/orders/{new['order_id']}"
    refused = await shop.http.post(f"{door}/extend", json={"extend_by_seconds": 60})
    assert refused.status_code == 401  # the client's key opens no operator's door
    extended = await shop.http.post(
        f"{door}/extend", json={"extend_by_seconds": 60, "note": "on the phone"}, headers=admin
    )
    assert extended.status_code == 200, extended.text
    moved = datetime.fromisoformat(extended.json()["expires_at"])
    assert moved - datetime.fromisoformat(new["expires_at"]) == timedelta(seconds=60)
    too_far = await shop.http.post(
        f"{door}/extend", json={"extend_by_seconds": 7200}, headers=admin
    )
    assert too_far.status_code == 409 and "cannot move past" in too_far.json()["detail"]
    cancelled = await shop.http.post(f"{door}/cancel", json={"note": "buyer asked"}, headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await shop.http.post(f"{door}/cancel", json={}, headers=admin)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    later = await shop.get(f"/v1/orders/{new['order_id']}/timeline")
    operator = [(e["event"], e["detail"]) for e in later["entries"] if e["source"] == "operator"]
    assert operator[0][0].startswith("operator: extend deadline to ")
    assert operator[1:] == [("operator: cancel", "buyer asked")]

    runs = await shop.http.get(f"{system.api_urls[0]}/v1/admin/reconciliation/runs", headers=admin)
    assert runs.status_code == 200 and isinstance(runs.json(), list)


async def webhook_deliveries(
    shop: Shop, endpoint_id: str, order_ids: set[str], count: int
) -> list[dict[str, Any]]:
    """The endpoint's deliveries of these orders (other tests' orders may be told too), once
    there are `count` and every one is delivered."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        response = await shop.http.get(
            f"{shop.system.api_urls[0]}/v1/webhook-endpoints/{endpoint_id}/deliveries"
        )
        assert response.status_code == 200, response.text
        found = [d for d in response.json() if d["order_id"] in order_ids]
        if len(found) == count and all(d["status"] == "delivered" for d in found):
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the deliveries never got there: {json.dumps(found, indent=1)}")
        await asyncio.sleep(0.1)


async def test_webhooks_tell_each_orders_story_in_order_and_a_worker_killed_mid_delivery_loses_none(
    shop: Shop, sandbox: Sandbox, system: System
) -> None:
    receiver = Receiver()
    async with serving(receiver.app(), free_port()) as receiver_url:
        response = await shop.http.post(
            f"{system.api_urls[0]}/v1/webhook-endpoints",
            json={"url": f"{receiver_url}/hooks", "events": [str(event) for event in EventType]},
        )
        assert response.status_code == 201, response.text
        endpoint = response.json()
        receiver.secret = endpoint["secret"]
        try:
            room = reservation()
            old = await shop.order(room, gateway=Gateway.ALIPAY)
            new = await shop.order(room, api=1, gateway=Gateway.ALIPAY)
            ours = {old["order_id"], new["order_id"]}
            await shop.settled(old["order_id"], "superseded")
            # Never scanned: Alipay takes the payment after the close, and it is refunded.
            await sandbox.pay(old["order_id"])
            await shop.settled(old["order_id"], "refunded")
            await webhook_deliveries(shop, endpoint["id"], ours, 4)

            # The next delivery is held by the receiver while every worker is killed.
            receiver.held_order, receiver.hold = new["order_id"], asyncio.Event()
            cancelled = await shop.http.post(
                f"{system.api_urls[0]}/v1/orders/{new['order_id']}/cancel"
            )
            assert cancelled.status_code == 200, cancelled.text
            await asyncio.wait_for(receiver.arrived.wait(), 30)
            system.kill_workers()
            receiver.hold.set()
            system.start_workers()
            deliveries = await webhook_deliveries(shop, endpoint["id"], ours, 5)
        finally:
            disabled = await shop.http.post(
                f"{system.api_urls[0]}/v1/webhook-endpoints/{endpoint['id']}/disable"
            )
            assert disabled.status_code == 200, disabled.text

    assert receiver.unverified == 0
    order_of = {delivery["event_id"]: delivery["order_id"] for delivery in deliveries}
    told: dict[str, list[str]] = {}
    for event in receiver.taken_once():
        if event["id"] in order_of:
            told.setdefault(order_of[event["id"]], []).append(event["type"])
    assert told == {
        old["order_id"]: ["order.created", "order.superseded", "order.refunded"],
        new["order_id"]: ["order.created", "order.cancelled"],
    }
    # The cancellation came twice: to the worker killed with it in hand, then again.
    (cancellation,) = [
        e for e in receiver.taken_once() if e["type"] == "order.cancelled" and e["id"] in order_of
    ]
    assert receiver.attempts[cancellation["id"]] >= 2
    # The order as GET shows it; each worker builds the checkout URL from its own API's.
    shown = await shop.get(f"/v1/orders/{new['order_id']}")
    assert {**cancellation["data"], "checkout_url": None} == {**shown, "checkout_url": None}


# Last, so that it replays the histories of every saga the tests above ran.
async def _each(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


async def test_every_history_replays(system: System, tmp_path: Path) -> None:
    """Determinism: every saga this session ran replays on the current workflow code."""
    client = await system.temporal_client()
    histories = await all_histories(client)
    assert len(histories) >= 20
    replayer = Replayer(workflows=WORKFLOWS, data_converter=client.data_converter)
    results = await replayer.replay_workflows(_each(histories), raise_on_replay_failure=False)
    assert results.replay_failures == {}
    record_distinct_paths(histories)
