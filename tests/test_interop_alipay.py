"""Alipay OpenAPI (RSA2) interoperability with python-alipay-sdk (3.4.0), a merchant SDK nobody
here wrote, as the other side of the wire: its client against our sandbox over loopback HTTP,
its verification against our client's signed requests, its notification verification against
our sandbox's notifications, and our notification door against notifications it signs.

Agreement with our own code would prove little — both sides could share one misreading of the
protocol. Agreement with code written elsewhere, from Alipay's documents, is the point.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qsl
from urllib.request import urlopen

import httpx
import pytest
from alipay import AliPay
from alipay.exceptions import AliPayValidationError

from core.settings import SANDBOX_APP_ID
from core.vocabulary import Gateway
from gateways.errors import NotificationRejected, TradeNotFound
from gateways.gateway import CallbackRequest, EventKind, NotifiedEvent
from gateways.registry import notification_verifiers, payment_gateways
from tests.interop import World, interop_world, order_number

SUBJECT = "三日房费"
AMOUNT = "29.70"
SUCCESS = "10000"
# How Alipay's gateway is reached: the SDK's own transport is a GET with every parameter in
# the query string; Alipay's official SDKs POST them as a form.
POST, GET = "POST", "GET"


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with interop_world(tmp_path_factory.mktemp("interop_alipay")) as world:
        yield world


def alipay_sdk(
    world: World,
    *,
    app_private_key: str = "app_private.pem",
    alipay_public_key: str = "sandbox_public.pem",
    notify_url: str | None = None,
    transport: str = POST,
) -> AliPay:
    """python-alipay-sdk's client as the sandbox's merchant app: it signs with the app's
    private key and verifies answers with the key it holds as Alipay's (key file names)."""
    sdk = AliPay(
        appid=SANDBOX_APP_ID,
        app_notify_url=notify_url,
        app_private_key_string=world.key(app_private_key),
        alipay_public_key_string=world.key(alipay_public_key),
        sign_type="RSA2",
    )
    # Every server API call goes to `_gateway` (`debug` only picks between Alipay's own two
    # hosts); set on this instance, it points this client alone at the sandbox.
    sdk._gateway = f"{world.sandbox_url}/gateway.do"
    if transport == POST:
        sdk.verified_sync_response = partial(_posted, sdk)
    return sdk


def _posted(sdk: AliPay, data: dict[str, Any], response_type: str) -> Any:
    """The SDK's `verified_sync_response` — its signed parameters, its verification of the
    answer — with the parameters sent as a POST form instead of a GET query string, which the
    sandbox does not serve (see the GET case of the first test)."""
    form = sdk.sign_data(data).encode("ascii")
    with urlopen(sdk._gateway, data=form, timeout=10) as response:
        raw = response.read().decode("utf-8")
    return sdk._verify_and_return_sync_response(raw, response_type)


async def answered(call: Callable[..., Any], *arguments: Any, **named: Any) -> dict[str, Any]:
    """One SDK call, made in a thread: the `*_response` node, once the SDK has verified its
    signature (it raises AliPayValidationError when that fails)."""
    node: dict[str, Any] = await asyncio.to_thread(call, *arguments, **named)
    return node


def posted_form(body: bytes) -> tuple[dict[str, str], str]:
    """A posted form's fields but `sign`, and `sign`."""
    form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    signature = form.pop("sign")
    return form, signature


def sdk_verifies(sdk: AliPay, form: dict[str, str], signature: str) -> bool:
    """python-alipay-sdk's check of a notification: RSA2 over the sorted fields but sign and
    sign_type. `verify` pops sign_type from the dict it is given, so it gets a copy."""
    return bool(sdk.verify(dict(form), signature))


async def precreate(sdk: AliPay, out_trade_no: str) -> dict[str, Any]:
    node = await answered(
        sdk.api_alipay_trade_precreate,
        subject=SUBJECT,
        out_trade_no=out_trade_no,
        total_amount=AMOUNT,
    )
    # Not 40002 isv.invalid-signature: the sandbox verified the SDK's signature.
    assert (node["code"], node["out_trade_no"]) == (SUCCESS, out_trade_no), node
    return node


@pytest.mark.parametrize(
    "transport",
    [
        POST,
        # The SDK's own transport: every call a GET with its parameters in the query string.
        GET,
    ],
)
async def test_python_alipay_sdk_precreates_queries_closes_and_refunds_through_the_sandbox(
    world: World, transport: str
) -> None:
    sdk = alipay_sdk(
        world, notify_url=world.notify_url(f"alipay-flow-{transport}"), transport=transport
    )
    paid, closed = order_number("ALP"), order_number("ALC")

    node = await precreate(sdk, paid)
    assert node["qr_code"] == f"{world.sandbox_url}/qr/{paid}"
    # Before the buyer scans there is no trade: a business failure, signed and verified all
    # the same.
    node = await answered(sdk.api_alipay_trade_query, out_trade_no=paid)
    assert (node["code"], node["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")

    bought = await world.buyer("pay", paid)
    node = await answered(sdk.api_alipay_trade_query, out_trade_no=paid)
    assert (node["code"], node["trade_status"], node["total_amount"]) == (
        SUCCESS,
        "TRADE_SUCCESS",
        AMOUNT,
    )
    assert node["trade_no"] == bought["trade_no"]

    await precreate(sdk, closed)
    await world.buyer("scan", closed)
    node = await answered(sdk.api_alipay_trade_close, out_trade_no=closed)
    assert (node["code"], node["out_trade_no"]) == (SUCCESS, closed)
    node = await answered(sdk.api_alipay_trade_query, out_trade_no=closed)
    assert node["trade_status"] == "TRADE_CLOSED"

    refund_no = order_number("ALR")
    node = await answered(
        sdk.api_alipay_trade_refund,
        refund_amount=AMOUNT,
        out_trade_no=paid,
        out_request_no=refund_no,
    )
    assert (node["code"], node["fund_change"], node["refund_fee"]) == (SUCCESS, "Y", AMOUNT)
    node = await answered(sdk.api_alipay_trade_fastpay_refund_query, refund_no, out_trade_no=paid)
    assert (node["code"], node["out_request_no"], node["refund_status"]) == (
        SUCCESS,
        refund_no,
        "REFUND_SUCCESS",
    )
    assert node["refund_amount"] == AMOUNT


async def test_python_alipay_sdk_refuses_an_answer_its_key_does_not_verify(world: World) -> None:
    out_trade_no = order_number("ALK")
    await precreate(alipay_sdk(world), out_trade_no)
    # Holding another key as Alipay's, the same (idempotent) call's answer must not verify.
    other_key = alipay_sdk(world, alipay_public_key="wechatpay_platform_public.pem")
    with pytest.raises(AliPayValidationError):
        await answered(
            other_key.api_alipay_trade_precreate,
            subject=SUBJECT,
            out_trade_no=out_trade_no,
            total_amount=AMOUNT,
        )


async def test_the_sandbox_refuses_a_python_alipay_sdk_request_signed_with_another_key(
    world: World,
) -> None:
    forger = alipay_sdk(world, app_private_key="sandbox_private.pem")
    node = await answered(
        forger.api_alipay_trade_precreate,
        subject=SUBJECT,
        out_trade_no=order_number("ALF"),
        total_amount=AMOUNT,
    )
    assert (node["code"], node["sub_code"]) == ("40002", "isv.invalid-signature")


async def test_python_alipay_sdk_verifies_our_clients_request_signatures(world: World) -> None:
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    out_trade_no = order_number("ALO")
    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [keep]}) as http:
        ours = payment_gateways(world.settings, http)[Gateway.ALIPAY]
        await ours.create_qr_payment(
            out_trade_no=out_trade_no,
            amount_cents=2970,
            subject=SUBJECT,
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        # Nobody has scanned: the trade does not exist yet, but the request was made.
        with pytest.raises(TradeNotFound):
            await ours.query(out_trade_no=out_trade_no)

    # The SDK's verifier, holding our app's public key as the key to check with (its private
    # key is never used here); and one holding another key, which must not verify.
    verifier = alipay_sdk(world, alipay_public_key="app_public.pem")
    stranger = alipay_sdk(world, alipay_public_key="sandbox_public.pem")
    methods = []
    for request in sent:
        params, signature = posted_form(request.content)
        methods.append(params["method"])
        # A request's signature covers every parameter but `sign`, sign_type included: the
        # SDK's `verify` is for notifications (it drops sign_type), so its `_verify` is used
        # on the string its own `_ordered_data` sorts the parameters into.
        message = "&".join(f"{key}={value}" for key, value in verifier._ordered_data(params))
        assert verifier._verify(message, signature)
        assert not stranger._verify(message, signature)
    assert methods == ["alipay.trade.precreate", "alipay.trade.query"]
    # What was signed held the subject as UTF-8 text (ours), not as \\u escapes (the SDK's).
    assert SUBJECT in posted_form(sent[0].content)[0]["biz_content"]


async def test_python_alipay_sdk_verifies_the_sandboxs_notifications(world: World) -> None:
    channel = "alipay-notifications"
    sdk = alipay_sdk(world, notify_url=world.notify_url(channel))
    out_trade_no = order_number("ALN")
    await precreate(sdk, out_trade_no)
    bought = await world.buyer("pay", out_trade_no)

    payment = await world.inbox.next(channel)
    form, signature = posted_form(payment.body)
    assert sdk_verifies(sdk, form, signature)
    assert (form["out_trade_no"], form["trade_no"], form["app_id"]) == (
        out_trade_no,
        bought["trade_no"],
        SANDBOX_APP_ID,
    )
    assert (form["trade_status"], form["total_amount"], form["subject"]) == (
        "TRADE_SUCCESS",
        AMOUNT,
        SUBJECT,
    )
    # The SDK really checks: a changed amount no longer verifies.
    assert not sdk_verifies(sdk, {**form, "total_amount": "0.01"}, signature)

    # paysaga's own door reads the very same form as the same payment.
    door = notification_verifiers(world.settings)[Gateway.ALIPAY]
    ours = door.verify(CallbackRequest(payment.headers, payment.body), now=datetime.now(UTC))
    assert (ours.kind, ours.event_id, ours.out_trade_no) == (
        EventKind.PAYMENT,
        form["notify_id"],
        out_trade_no,
    )

    refund_no = order_number("ALR")
    node = await answered(
        sdk.api_alipay_trade_refund,
        refund_amount=AMOUNT,
        out_trade_no=out_trade_no,
        out_request_no=refund_no,
    )
    assert node["code"] == SUCCESS
    refunded = await world.inbox.next(channel)
    form, signature = posted_form(refunded.body)
    assert sdk_verifies(sdk, form, signature)
    assert (form["out_biz_no"], form["refund_fee"], form["trade_status"]) == (
        refund_no,
        AMOUNT,
        "TRADE_CLOSED",
    )


PAID_AT = datetime(2026, 11, 23, 11, 59, 59, tzinfo=UTC)


def notification(out_trade_no: str, **changes: str) -> dict[str, str]:
    """A payment's `trade_status_sync` fields as Alipay's documents list them, unsigned."""
    return {
        "notify_time": "2026-11-23 20:00:00",
        "notify_type": "trade_status_sync",
        "notify_id": f"ac05099524730693a8b330c5ecf72da{out_trade_no[-6:]}",
        "app_id": SANDBOX_APP_ID,
        "auth_app_id": SANDBOX_APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2026112322001400000000000001",
        "out_trade_no": out_trade_no,
        "buyer_id": "2088102122524333",
        "seller_id": "2088000000000000",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": AMOUNT,
        "receipt_amount": AMOUNT,
        "subject": SUBJECT,
        "gmt_create": "2026-11-23 19:59:30",
        "gmt_payment": "2026-11-23 19:59:59",
        **changes,
    }


def sdk_signed_form(world: World, fields: dict[str, str], *, signing_key: str) -> CallbackRequest:
    """The form Alipay posts, signed by python-alipay-sdk's own `sign_data` with `signing_key`
    (a key file name), which also URL-encodes it. sign_type is added after signing: a
    notification's signature leaves it out."""
    signer = alipay_sdk(world, app_private_key=signing_key)
    body = signer.sign_data(dict(fields)) + "&sign_type=RSA2"
    return CallbackRequest(
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=body.encode("ascii"),
    )


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({}, EventKind.PAYMENT),
        # A full refund: the trade closes, and the refund fields say why.
        (
            {
                "trade_status": "TRADE_CLOSED",
                "refund_fee": AMOUNT,
                "gmt_refund": "2026-11-23 20:10:00.123",
                "out_biz_no": "RF0001",
                "gmt_close": "2026-11-23 20:10:00",
            },
            EventKind.REFUND,
        ),
    ],
)
async def test_our_door_accepts_notifications_signed_by_python_alipay_sdk(
    world: World, changes: dict[str, str], kind: EventKind
) -> None:
    out_trade_no = order_number("ALS")
    fields = notification(out_trade_no, **changes)
    request = sdk_signed_form(world, fields, signing_key="sandbox_private.pem")
    # What was built is Alipay's format as the SDK reads it, not merely as we read it.
    form, signature = posted_form(request.body)
    assert form == {**fields, "sign_type": "RSA2"}
    assert sdk_verifies(alipay_sdk(world), form, signature)

    door = notification_verifiers(world.settings)[Gateway.ALIPAY]
    assert door.verify(request, now=datetime.now(UTC)) == NotifiedEvent(
        gateway=Gateway.ALIPAY,
        kind=kind,
        event_id=fields["notify_id"],
        out_trade_no=out_trade_no,
        trade_no="2026112322001400000000000001",
        trade_status=fields["trade_status"],
        amount_cents=2970,
        paid_at=PAID_AT,
    )


async def test_our_door_refuses_a_notification_python_alipay_sdk_signed_with_another_key(
    world: World,
) -> None:
    out_trade_no = order_number("ALS")
    request = sdk_signed_form(world, notification(out_trade_no), signing_key="app_private.pem")
    form, signature = posted_form(request.body)
    assert form == {**notification(out_trade_no), "sign_type": "RSA2"}
    # The SDK, holding Alipay's key, refuses it as well: a forgery by its rules too.
    assert not sdk_verifies(alipay_sdk(world), form, signature)
    door = notification_verifiers(world.settings)[Gateway.ALIPAY]
    with pytest.raises(NotificationRejected, match="signature does not verify"):
        door.verify(request, now=datetime.now(UTC))
