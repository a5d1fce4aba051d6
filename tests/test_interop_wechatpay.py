"""WeChat Pay APIv3 interoperability with wechatpayv3 (2.0.4), a merchant SDK nobody here wrote,
as the other side of the wire: its client against our sandbox over loopback HTTP, its signing
against our client's requests, its notification parsing against our sandbox's notifications,
and our notification door against notifications signed with its code.

Agreement with our own code would prove little — both sides could share one misreading of the
protocol. Agreement with code written elsewhere, from WeChat Pay's documents, is the point.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import wechatpayv3.utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import build_authorization, load_private_key, rsa_sign

from core.settings import (
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_MERCHANT_SERIAL,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
)
from core.vocabulary import Gateway
from gateways.errors import NotificationRejected
from gateways.gateway import CallbackRequest, EventKind, NotifiedEvent
from gateways.registry import notification_verifiers, payment_gateways
from tests.interop import World, eventually, interop_world, order_number

SCHEME = "WECHATPAY2-SHA256-RSA2048"
SUBJECT = "三日房费"
TOTAL = 2970
_AUTHORIZATION_PART = re.compile(r'([a-z_]+)="([^"]*)"')


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with interop_world(tmp_path_factory.mktemp("interop_wechatpay")) as world:
        yield world


def merchant_sdk(
    world: World,
    *,
    notify_url: str | None = None,
    private_key: str | None = None,
    public_key: str | None = None,
    public_key_id: str = SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
) -> WeChatPay:
    """wechatpayv3's client as the sandbox's merchant, in public-key mode: it verifies answers
    with the key it is given instead of downloading platform certificates."""
    wxpay = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=SANDBOX_WECHATPAY_MCHID,
        private_key=private_key or world.key("wechatpay_merchant_private.pem"),
        cert_serial_no=SANDBOX_WECHATPAY_MERCHANT_SERIAL,
        appid=SANDBOX_WECHATPAY_APPID,
        apiv3_key=world.key("wechatpay_apiv3.key"),
        notify_url=notify_url,
        public_key=public_key or world.key("wechatpay_platform_public.pem"),
        public_key_id=public_key_id,
        timeout=10,
    )
    # The SDK sends every call to `_core._gate_way + path`; setting it on this instance points
    # this client alone at the sandbox.
    wxpay._core._gate_way = world.sandbox_url
    return wxpay


async def answered(call: Callable[..., Any], **arguments: Any) -> tuple[int, Any]:
    """One SDK call, made in a thread: its HTTP status and body (text for JSON, else bytes).

    The SDK raises instead when a 2xx answer's signature does not verify.
    """
    status, body = await asyncio.to_thread(call, **arguments)
    return int(status), body


def fields(body: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body)
    return parsed


async def place(wxpay: WeChatPay, out_trade_no: str, total: int = TOTAL) -> str:
    status, body = await answered(
        wxpay.pay,
        description=SUBJECT,
        out_trade_no=out_trade_no,
        amount={"total": total, "currency": "CNY"},
    )
    # 200 and not 401 SIGN_ERROR: the sandbox verified the SDK's signature.
    assert status == 200, body
    code_url: str = fields(body)["code_url"]
    return code_url


async def test_wechatpayv3_places_queries_closes_and_refunds_through_the_sandbox(
    world: World,
) -> None:
    wxpay = merchant_sdk(world, notify_url=world.notify_url("wechatpay-flow"))
    paid, closed = order_number("WXP"), order_number("WXC")

    code_url = await place(wxpay, paid)
    assert code_url.startswith(f"{world.sandbox_url}/wxpay/bizpayurl?pr=")
    # A GET with a query string (`?mchid=`): the SDK signs the path and query as sent.
    status, body = await answered(wxpay.query, out_trade_no=paid)
    waiting = fields(body)
    assert (status, waiting["out_trade_no"], waiting["trade_state"]) == (200, paid, "NOTPAY")

    await place(wxpay, closed, total=100)
    # 204 with an empty body, signed over that emptiness: the SDK verified it too.
    assert await answered(wxpay.close, out_trade_no=closed) == (204, b"")
    status, body = await answered(wxpay.query, out_trade_no=closed)
    assert (status, fields(body)["trade_state"]) == (200, "CLOSED")

    bought = await world.buyer("pay", paid)
    status, body = await answered(wxpay.query, out_trade_no=paid)
    trade = fields(body)
    assert (status, trade["trade_state"], trade["amount"]["total"]) == (200, "SUCCESS", TOTAL)
    assert trade["transaction_id"] == bought["trade_no"]

    refund_no = order_number("WXR")
    status, body = await answered(
        wxpay.refund,
        out_refund_no=refund_no,
        amount={"refund": TOTAL, "total": TOTAL, "currency": "CNY"},
        transaction_id=trade["transaction_id"],
    )
    accepted = fields(body)
    assert (status, accepted["out_refund_no"], accepted["out_trade_no"]) == (200, refund_no, paid)
    assert accepted["status"] in ("PROCESSING", "SUCCESS")

    async def refund_succeeded() -> bool:
        status, body = await answered(wxpay.query_refund, out_refund_no=refund_no)
        assert status == 200, body
        refund_status: str = fields(body)["status"]
        return refund_status == "SUCCESS"

    await eventually(refund_succeeded)


async def test_wechatpayv3_refuses_an_answer_its_key_does_not_verify(world: World) -> None:
    out_trade_no = order_number("WXK")
    await place(merchant_sdk(world, notify_url=world.notify_url("wechatpay-keys")), out_trade_no)

    # The key id the sandbox names, but another key: the signature must fail to verify.
    other_key = merchant_sdk(world, public_key=world.key("sandbox_public.pem"))
    with pytest.raises(Exception, match="failed to verify the signature"):
        await answered(other_key.query, out_trade_no=out_trade_no)

    # The sandbox's key under another id: the SDK looks for a platform certificate with the
    # sandbox's id (GET /v3/certificates, which the sandbox does not serve), finds none, refuses.
    other_id = merchant_sdk(world, public_key_id="PUB_KEY_ID_0119000001092026112300000000000099")
    with pytest.raises(Exception, match="failed to verify the signature"):
        await answered(other_id.query, out_trade_no=out_trade_no)


async def test_the_sandbox_refuses_a_wechatpayv3_request_signed_with_another_key(
    world: World,
) -> None:
    forger = merchant_sdk(
        world,
        notify_url=world.notify_url("wechatpay-forged"),
        private_key=world.key("app_private.pem"),
    )
    status, body = await answered(
        forger.pay,
        description=SUBJECT,
        out_trade_no=order_number("WXF"),
        amount={"total": TOTAL, "currency": "CNY"},
    )
    # The SDK does not verify error answers; the sandbox's refusal is what counts here.
    assert (status, fields(body)["code"]) == (401, "SIGN_ERROR")


class _FrozenClock:
    """A stand-in for the `time` module inside `wechatpayv3.utils`, whose `build_authorization`
    reads the timestamp from `time.time()` and takes no argument for it."""

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds

    def time(self) -> float:
        return float(self._seconds)


def authorization_fields(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == SCHEME
    return dict(_AUTHORIZATION_PART.findall(rest))


async def test_our_client_signs_requests_exactly_as_wechatpayv3_does(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    out_trade_no = order_number("WXO")
    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [keep]}) as http:
        ours = payment_gateways(world.settings, http)[Gateway.WECHATPAY]
        await ours.create_qr_payment(
            out_trade_no=out_trade_no,
            amount_cents=TOTAL,
            subject=SUBJECT,
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        assert not (await ours.query(out_trade_no=out_trade_no)).paid
    assert [(request.method, request.url.raw_path.decode()) for request in sent] == [
        ("POST", "/v3/pay/transactions/native"),
        (
            "GET",
            f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={SANDBOX_WECHATPAY_MCHID}",
        ),
    ]
    assert SUBJECT.encode() in sent[0].content

    merchant_key = load_private_key(world.key("wechatpay_merchant_private.pem"))
    for request in sent:
        signed = authorization_fields(request.headers["Authorization"])
        # SHA256withRSA with PKCS#1 v1.5 padding is deterministic: for the same timestamp and
        # nonce, the SDK's signature equals ours only if it signed the very same five lines.
        monkeypatch.setattr(wechatpayv3.utils, "time", _FrozenClock(int(signed["timestamp"])))
        theirs = build_authorization(
            request.url.raw_path.decode("ascii"),
            request.method,
            SANDBOX_WECHATPAY_MCHID,
            SANDBOX_WECHATPAY_MERCHANT_SERIAL,
            merchant_key,
            data=request.content.decode("utf-8"),
            nonce_str=signed["nonce_str"],
        )
        assert authorization_fields(theirs) == signed


async def test_wechatpayv3_reads_the_sandboxs_notifications(world: World) -> None:
    channel = "wechatpay-notifications"
    wxpay = merchant_sdk(world, notify_url=world.notify_url(channel))
    out_trade_no = order_number("WXN")
    await place(wxpay, out_trade_no)
    bought = await world.buyer("pay", out_trade_no)

    payment = await world.inbox.next(channel)
    event = await asyncio.to_thread(wxpay.callback, payment.headers, payment.body)
    # None is the SDK's word for a notification whose signature or sealing it refused.
    assert event is not None
    resource = event["resource"]
    assert event["event_type"] == "TRANSACTION.SUCCESS"
    assert (resource["out_trade_no"], resource["transaction_id"]) == (
        out_trade_no,
        bought["trade_no"],
    )
    assert (resource["trade_state"], resource["amount"]["total"]) == ("SUCCESS", TOTAL)
    assert (resource["mchid"], resource["appid"]) == (
        SANDBOX_WECHATPAY_MCHID,
        SANDBOX_WECHATPAY_APPID,
    )
    # The SDK really checks: one byte changed in the signed body, and it refuses.
    tampered = payment.body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESZ"')
    assert tampered != payment.body
    assert await asyncio.to_thread(wxpay.callback, payment.headers, tampered) is None

    # paysaga's own door reads the very same bytes as the same payment.
    door = notification_verifiers(world.settings)[Gateway.WECHATPAY]
    ours = door.verify(CallbackRequest(payment.headers, payment.body), now=datetime.now(UTC))
    assert (ours.kind, ours.event_id, ours.out_trade_no) == (
        EventKind.PAYMENT,
        event["id"],
        out_trade_no,
    )
    assert (ours.trade_no, ours.amount_cents) == (bought["trade_no"], TOTAL)

    refund_no = order_number("WXR")
    status, _ = await answered(
        wxpay.refund,
        out_refund_no=refund_no,
        amount={"refund": TOTAL, "total": TOTAL, "currency": "CNY"},
        out_trade_no=out_trade_no,
    )
    assert status == 200
    refunded = await world.inbox.next(channel)
    event = await asyncio.to_thread(wxpay.callback, refunded.headers, refunded.body)
    assert event is not None
    resource = event["resource"]
    assert event["event_type"] == "REFUND.SUCCESS"
    assert (resource["out_refund_no"], resource["out_trade_no"]) == (refund_no, out_trade_no)
    assert (resource["refund_status"], resource["amount"]["refund"]) == ("SUCCESS", TOTAL)


def sdk_signed_notification(
    world: World,
    resource: dict[str, Any],
    *,
    event_type: str,
    signing_key: str = "wechatpay_platform_private.pem",
) -> tuple[CallbackRequest, str]:
    """A notification as WeChat Pay sends one, signed by wechatpayv3's own `rsa_sign` over
    `timestamp\\nnonce\\nbody\\n`; and the signature's nonce.

    The SDK only opens sealed resources, so the sealing (AEAD_AES_256_GCM under the APIv3 key,
    the 16-byte tag after the ciphertext) is done here with `cryptography`.
    """
    original_type = "refund" if event_type.startswith("REFUND.") else "transaction"
    resource_nonce = secrets.token_hex(6)
    plaintext = json.dumps(resource, ensure_ascii=False).encode()
    apiv3_key = world.key("wechatpay_apiv3.key").encode()
    sealed = AESGCM(apiv3_key).encrypt(resource_nonce.encode(), plaintext, original_type.encode())
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": "2026-11-23T20:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": original_type,
                "nonce": resource_nonce,
            },
        },
        ensure_ascii=False,
    )
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex.upper()
    signature = rsa_sign(
        load_private_key(world.key(signing_key)), f"{timestamp}\n{nonce}\n{body}\n"
    )
    headers = {
        "content-type": "application/json",
        "wechatpay-timestamp": timestamp,
        "wechatpay-nonce": nonce,
        "wechatpay-serial": SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        "wechatpay-signature": signature,
        "wechatpay-signature-type": SCHEME,
    }
    return CallbackRequest(headers=headers, body=body.encode()), nonce


PAID_AT = datetime(2026, 11, 23, 11, 59, 58, tzinfo=UTC)


def transaction(out_trade_no: str) -> dict[str, Any]:
    return {
        "appid": SANDBOX_WECHATPAY_APPID,
        "mchid": SANDBOX_WECHATPAY_MCHID,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202611230000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2026-11-23T19:59:58+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {
            "total": TOTAL,
            "payer_total": TOTAL,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }


def refund(out_trade_no: str) -> dict[str, Any]:
    return {
        "mchid": SANDBOX_WECHATPAY_MCHID,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202611230000000001",
        "out_refund_no": f"R{out_trade_no}",
        "refund_id": "50300000202611230000000000001",
        "refund_status": "SUCCESS",
        "success_time": "2026-11-24T10:15:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": TOTAL, "refund": TOTAL, "payer_total": TOTAL, "payer_refund": TOTAL},
    }


@pytest.mark.parametrize(
    ("event_type", "build", "kind"),
    [
        ("TRANSACTION.SUCCESS", transaction, EventKind.PAYMENT),
        ("REFUND.SUCCESS", refund, EventKind.REFUND),
    ],
)
async def test_our_door_accepts_notifications_signed_by_wechatpayv3(
    world: World, event_type: str, build: Callable[[str], dict[str, Any]], kind: EventKind
) -> None:
    out_trade_no = order_number("WXS")
    request, nonce = sdk_signed_notification(world, build(out_trade_no), event_type=event_type)
    # What was built is WeChat Pay's format as the SDK reads it, not merely as we read it.
    opened = merchant_sdk(world).callback(dict(request.headers), request.body)
    assert opened is not None and opened["resource"] == build(out_trade_no)

    door = notification_verifiers(world.settings)[Gateway.WECHATPAY]
    event = door.verify(request, now=datetime.now(UTC))
    paid = kind is EventKind.PAYMENT
    assert event == NotifiedEvent(
        gateway=Gateway.WECHATPAY,
        kind=kind,
        event_id=json.loads(request.body)["id"],
        out_trade_no=out_trade_no,
        trade_no="4200000000202611230000000001",
        trade_status="SUCCESS",
        amount_cents=TOTAL,
        paid_at=PAID_AT if paid else None,
        nonce=nonce,
    )


async def test_our_door_refuses_a_notification_wechatpayv3_signed_with_another_key(
    world: World,
) -> None:
    request, _ = sdk_signed_notification(
        world,
        transaction(order_number("WXS")),
        event_type="TRANSACTION.SUCCESS",
        signing_key="wechatpay_merchant_private.pem",
    )
    # The SDK, holding WeChat Pay's key, refuses it as well: the forgery is one by its rules too.
    assert merchant_sdk(world).callback(dict(request.headers), request.body) is None
    door = notification_verifiers(world.settings)[Gateway.WECHATPAY]
    with pytest.raises(NotificationRejected, match="signature does not verify"):
        door.verify(request, now=datetime.now(UTC))
