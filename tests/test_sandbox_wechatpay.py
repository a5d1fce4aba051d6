"""The sandbox's WeChat Pay half over the real wire: a merchant written from the APIv3 protocol
alone (plain httpx and cryptography) on one side, a real notification receiver on the other,
uvicorn in between."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import stat
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request, Response

from sandbox import SandboxSettings, create_app
from stack.ports import free_port
from tests.servers import serving

SCHEME = "WECHATPAY2-SHA256-RSA2048"
# Not the sandbox's defaults: the merchant is whoever the settings say.
MCHID = "1230000109"
APPID = "wxd678efh567hg6787"
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
KEY_ID = "PUB_KEY_ID_0112300001092026010100000000000001"
# WeChat Pay's 15-second first retry becomes 15 ms.
RETRY_SCALE = 0.001
REFUND_SECONDS = 0.3
CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Notice:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """The merchant's notify_url: one channel per test, HTTP statuses scripted per channel."""

    def __init__(self) -> None:
        self.received: defaultdict[str, asyncio.Queue[Notice]] = defaultdict(asyncio.Queue)
        self.replies: dict[str, list[int]] = {}
        self.app = FastAPI()
        self.app.add_api_route("/notify/{channel}", self._endpoint, methods=["POST"])

    async def next(self, channel: str, timeout: float = 5.0) -> Notice:
        return await asyncio.wait_for(self.received[channel].get(), timeout)

    async def _endpoint(self, channel: str, request: Request) -> Response:
        notice = Notice(dict(request.headers), await request.body())
        script = self.replies.get(channel)
        status = script.pop(0) if script else 204
        await self.received[channel].put(notice)
        if status in (200, 204):
            return Response(status_code=status)
        # How a merchant says no: 4xx/5xx with a FAIL body.
        return Response(
            json.dumps({"code": "FAIL", "message": "失败"}),
            status_code=status,
            media_type="application/json",
        )


@dataclass
class Merchant:
    """Our side of the wire, written from WeChat Pay's APIv3 rules alone."""

    http: httpx.AsyncClient
    sandbox_url: str
    receiver_url: str
    private_key: rsa.RSAPrivateKey
    wechatpay_public_key: rsa.RSAPublicKey
    apiv3_key: bytes

    def notify_url(self, channel: str) -> str:
        return f"{self.receiver_url}/notify/{channel}"

    async def send(
        self,
        method: str,
        target: str,
        payload: dict[str, Any] | None = None,
        *,
        timestamp: int | None = None,
        mchid: str = MCHID,
        serial: str = SERIAL,
        key: rsa.RSAPrivateKey | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        """A request signed over `body` (the JSON of `payload` unless given), as sent."""
        signed = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        nonce = secrets.token_hex(16)
        message = f"{method}\n{target}\n{stamp}\n{nonce}\n".encode() + signed + b"\n"
        signature = (key or self.private_key).sign(message, padding.PKCS1v15(), hashes.SHA256())
        authorization = (
            f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",timestamp="{stamp}",'
            f'serial_no="{serial}",signature="{base64.b64encode(signature).decode()}"'
        )
        headers = {"Accept": "application/json", "Authorization": authorization}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        return await self.http.request(
            method,
            f"{self.sandbox_url}{target}",
            content=signed if body is None else body,
            headers=headers,
        )

    async def call(
        self, method: str, target: str, payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        """A signed request whose answer must be signed by WeChat Pay."""
        return self.verified(await self.send(method, target, payload))

    def verified(self, response: httpx.Response) -> httpx.Response:
        self.check_signature(response.headers, response.content)
        assert response.headers["Request-ID"]
        return response

    def check_signature(self, headers: httpx.Headers | dict[str, str], body: bytes) -> None:
        """As a merchant checks WeChat Pay's answers and notifications."""
        lowered = {name.lower(): value for name, value in headers.items()}
        assert lowered["wechatpay-serial"] == KEY_ID
        assert lowered["wechatpay-signature-type"] == SCHEME
        stamp = lowered["wechatpay-timestamp"]
        assert abs(time.time() - int(stamp)) < 300
        message = f"{stamp}\n{lowered['wechatpay-nonce']}\n".encode() + body + b"\n"
        try:
            self.wechatpay_public_key.verify(
                base64.b64decode(lowered["wechatpay-signature"]),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise AssertionError("WeChat Pay's signature does not verify") from None

    def opened(self, notice: Notice) -> tuple[dict[str, Any], dict[str, Any]]:
        """A notification's event and its decrypted resource, after checking its signature."""
        self.check_signature(notice.headers, notice.body)
        event: dict[str, Any] = json.loads(notice.body)
        sealed = event["resource"]
        assert sealed["algorithm"] == "AEAD_AES_256_GCM" and len(sealed["nonce"]) == 12
        plaintext = AESGCM(self.apiv3_key).decrypt(
            sealed["nonce"].encode(),
            base64.b64decode(sealed["ciphertext"]),
            sealed["associated_data"].encode(),
        )
        resource: dict[str, Any] = json.loads(plaintext)
        return event, resource

    def order(self, out_trade_no: str, total: int = 2970, **changes: Any) -> dict[str, Any]:
        return {
            "appid": APPID,
            "mchid": MCHID,
            "description": "3 days",
            "out_trade_no": out_trade_no,
            "notify_url": self.notify_url(out_trade_no),
            "amount": {"total": total, "currency": "CNY"},
            **changes,
        }

    async def native(self, out_trade_no: str, **changes: Any) -> str:
        response = await self.call(
            "POST", "/v3/pay/transactions/native", self.order(out_trade_no, **changes)
        )
        assert response.status_code == 200, response.text
        code_url: str = response.json()["code_url"]
        return code_url

    async def query(self, out_trade_no: str) -> httpx.Response:
        return await self.call(
            "GET", f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={MCHID}"
        )

    async def close(self, out_trade_no: str) -> httpx.Response:
        target = f"/v3/pay/transactions/out-trade-no/{out_trade_no}/close"
        return await self.call("POST", target, {"mchid": MCHID})

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund: int, **changes: Any
    ) -> httpx.Response:
        payload = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": 2970, "currency": "CNY"},
            **changes,
        }
        return await self.call("POST", "/v3/refund/domestic/refunds", payload)

    async def refund_query(self, out_refund_no: str) -> httpx.Response:
        return await self.call("GET", f"/v3/refund/domestic/refunds/{out_refund_no}")

    async def buyer(self, action: str, out_trade_no: str) -> httpx.Response:
        return await self.http.post(f"{self.sandbox_url}/sandbox/trades/{out_trade_no}/{action}")

    async def trade(self, out_trade_no: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.sandbox_url}/sandbox/trades/{out_trade_no}")
        response.raise_for_status()
        view: dict[str, Any] = response.json()
        return view

    async def faults(self, **faults: Any) -> None:
        response = await self.http.put(f"{self.sandbox_url}/sandbox/faults", json=faults)
        response.raise_for_status()


@pytest.fixture(scope="session")
async def wechatpay_receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with serving(receiver.app, free_port()) as url:
        yield receiver, url


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wechatpay_keys")


@pytest.fixture(scope="session")
async def merchant(keys: Path, wechatpay_receiver: tuple[Receiver, str]) -> AsyncIterator[Merchant]:
    merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "merchant_public.pem").write_bytes(
        merchant_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    port = free_port()
    settings = SandboxSettings(
        port=port,
        app_public_key_file=keys / "alipay_app_public.pem",
        private_key_file=keys / "alipay_private.pem",
        public_key_file=keys / "alipay_public.pem",
        wechatpay_mchid=MCHID,
        wechatpay_appid=APPID,
        wechatpay_merchant_serial=SERIAL,
        wechatpay_merchant_public_key_file=keys / "merchant_public.pem",
        wechatpay_private_key_file=keys / "platform_private.pem",
        wechatpay_public_key_file=keys / "platform_public.pem",
        wechatpay_public_key_id=KEY_ID,
        wechatpay_apiv3_key_file=keys / "apiv3.key",
        wechatpay_refund_seconds=REFUND_SECONDS,
        notify_retry_scale=RETRY_SCALE,
    )
    async with (
        serving(create_app(settings), port) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        public_key = serialization.load_pem_public_key((keys / "platform_public.pem").read_bytes())
        assert isinstance(public_key, rsa.RSAPublicKey)
        yield Merchant(
            http=http,
            sandbox_url=url,
            receiver_url=wechatpay_receiver[1],
            private_key=merchant_key,
            wechatpay_public_key=public_key,
            apiv3_key=(keys / "apiv3.key").read_bytes(),
        )


@pytest.fixture(autouse=True)
async def no_faults(merchant: Merchant) -> None:
    response = await merchant.http.delete(f"{merchant.sandbox_url}/sandbox/faults")
    response.raise_for_status()


@pytest.fixture
def inbox(wechatpay_receiver: tuple[Receiver, str]) -> Receiver:
    return wechatpay_receiver[0]


@pytest.fixture
def order() -> str:
    return f"W{uuid.uuid4().hex[:24]}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


async def test_the_key_files_are_made_on_first_run(keys: Path, merchant: Merchant) -> None:
    apiv3 = keys / "apiv3.key"
    assert len(apiv3.read_bytes()) == 32 and apiv3.read_bytes().isalnum()
    for secret in (apiv3, keys / "platform_private.pem"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_settings_default_to_the_sandbox_merchant() -> None:
    settings = SandboxSettings()
    assert (settings.app_id, settings.wechatpay_mchid) == ("2021000000000000", "1900000109")
    assert settings.wechatpay_appid == "wx8888888888888888"
    assert settings.wechatpay_public_key_id.startswith("PUB_KEY_ID_")
    assert settings.wechatpay_apiv3_key_file.name == "wechatpay_apiv3.key"


async def test_an_order_exists_from_its_placing_and_placing_it_again_is_no_second(
    merchant: Merchant, order: str
) -> None:
    code_url = await merchant.native(order)
    assert code_url.startswith(f"{merchant.sandbox_url}/wxpay/bizpayurl?pr=")
    assert await merchant.native(order) == code_url
    changed = await merchant.call(
        "POST", "/v3/pay/transactions/native", merchant.order(order, total=3000)
    )
    assert error(changed) == (403, "OUT_TRADE_NO_USED")

    # Unlike Alipay's, the order is there before anyone scans its code.
    waiting = (await merchant.query(order)).json()
    assert (waiting["trade_state"], waiting["out_trade_no"]) == ("NOTPAY", order)
    assert (waiting["appid"], waiting["mchid"], waiting["trade_type"]) == (APPID, MCHID, "NATIVE")
    assert waiting["amount"]["total"] == 2970 and "transaction_id" not in waiting
    view = await merchant.trade(order)
    assert (view["gateway"], view["trade_no"], view["status"]) == ("wechatpay", None, "NOTPAY")
    assert (view["subject"], view["total_amount"], view["refunded_amount"]) == (
        "3 days",
        "29.70",
        "0.00",
    )

    unknown = await merchant.query(f"{order}x")
    assert error(unknown) == (404, "ORDER_NOT_EXIST")


async def test_orders_are_validated(merchant: Merchant, order: str) -> None:
    native = "/v3/pay/transactions/native"
    for payload in (
        merchant.order("short"),
        merchant.order(f"{order}#"),
        merchant.order(order, total=0),
        {**merchant.order(order), "amount": {"total": "29.70", "currency": "CNY"}},
        {**merchant.order(order), "amount": {"total": 29.7, "currency": "CNY"}},
        merchant.order(order, time_expire="2026-11-23 20:00:00"),
        merchant.order(order, notify_url="https://example.com/notify?order=1"),
        {key: value for key, value in merchant.order(order).items() if key != "description"},
    ):
        assert error(await merchant.call("POST", native, payload)) == (400, "PARAM_ERROR"), payload
    foreign = await merchant.call("POST", native, merchant.order(order, appid="wx0000000000000000"))
    assert error(foreign) == (400, "APPID_MCHID_NOT_MATCH")
    other_merchant = await merchant.call(
        "GET", f"/v3/pay/transactions/out-trade-no/{order}?mchid=1900000109"
    )
    assert error(other_merchant) == (400, "MCH_NOT_EXISTS")
    assert (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades/{order}")).is_error


async def test_payment_is_notified_signed_and_sealed(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.native(order)
    paid = await merchant.buyer("pay", order)
    assert paid.status_code == 200
    view = paid.json()
    assert (view["gateway"], view["status"]) == ("wechatpay", "SUCCESS")
    assert len(view["trade_no"]) == 28 and view["trade_no"].isdigit()

    event, resource = merchant.opened(await inbox.next(order))
    assert (event["event_type"], event["resource_type"]) == (
        "TRANSACTION.SUCCESS",
        "encrypt-resource",
    )
    assert event["resource"]["original_type"] == "transaction"
    assert datetime.fromisoformat(event["create_time"]).utcoffset() == timedelta(hours=8)
    query = (await merchant.query(order)).json()
    assert resource == query
    assert (query["trade_state"], query["transaction_id"]) == ("SUCCESS", view["trade_no"])
    assert query["amount"] == {
        "total": 2970,
        "payer_total": 2970,
        "currency": "CNY",
        "payer_currency": "CNY",
    }
    assert query["payer"]["openid"].startswith("o")
    assert datetime.fromisoformat(query["success_time"]).tzinfo is not None

    again = await merchant.call("POST", "/v3/pay/transactions/native", merchant.order(order))
    assert error(again) == (400, "ORDERPAID")
    [note] = (await merchant.trade(order))["notifications"]
    assert note["notify_id"] == event["id"] and note["kind"] == "payment"


async def test_notification_is_resent_signed_anew_until_answered_2xx(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    inbox.replies[order] = [500, 404, 200]
    await merchant.native(order)
    await merchant.buyer("pay", order)
    attempts = [await inbox.next(order) for _ in range(3)]
    for notice in attempts:
        merchant.opened(notice)
    assert len({notice.body for notice in attempts}) == 1
    assert len({notice.headers["wechatpay-nonce"] for notice in attempts}) == 3

    async def delivered() -> bool:
        [note] = (await merchant.trade(order))["notifications"]
        return bool(note["delivered"]) and note["attempts"] == 3

    await eventually(delivered)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.3)


async def test_close_of_an_unpaid_order_stops_payment(merchant: Merchant, order: str) -> None:
    await merchant.native(order)
    closed = await merchant.close(order)
    assert (closed.status_code, closed.content) == (204, b"")
    assert (await merchant.query(order)).json()["trade_state"] == "CLOSED"
    refused = await merchant.buyer("pay", order)
    assert refused.status_code == 409 and refused.json()["detail"]["reason"] == "ORDERCLOSED"
    assert (await merchant.close(order)).status_code == 204
    again = await merchant.call("POST", "/v3/pay/transactions/native", merchant.order(order))
    assert error(again) == (400, "ORDERCLOSED")
    unknown = await merchant.close(f"{order}x")
    assert error(unknown) == (404, "ORDER_NOT_EXIST")


async def test_close_of_a_paid_order_is_refused(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.native(order)
    await merchant.buyer("pay", order)
    assert error(await merchant.close(order)) == (400, "ORDERPAID")
    assert (await merchant.query(order)).json()["trade_state"] == "SUCCESS"
    merchant.opened(await inbox.next(order))


async def test_payment_can_win_the_race_with_the_close(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(pay_before_close=True)
    await merchant.native(order)
    assert error(await merchant.close(order)) == (400, "ORDERPAID")
    assert (await merchant.query(order)).json()["trade_state"] == "SUCCESS"
    _, resource = merchant.opened(await inbox.next(order))
    assert resource["trade_state"] == "SUCCESS"


async def test_a_refund_is_processing_then_succeeds_and_is_notified(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.native(order)
    unpaid = await merchant.refund(order, f"{order}-r1", 1000)
    assert error(unpaid) == (404, "RESOURCE_NOT_EXISTS")
    await merchant.buyer("pay", order)
    _, payment = merchant.opened(await inbox.next(order))

    refund_url = merchant.notify_url(f"{order}-refunds")
    accepted = await merchant.refund(order, f"{order}-r1", 1000, notify_url=refund_url)
    assert accepted.status_code == 200, accepted.text
    first = accepted.json()
    assert (first["status"], first["out_refund_no"]) == ("PROCESSING", f"{order}-r1")
    assert first["transaction_id"] == payment["transaction_id"] and "success_time" not in first
    assert (first["amount"]["refund"], first["amount"]["total"]) == (1000, 2970)
    assert (await merchant.refund_query(f"{order}-r1")).json()["status"] == "PROCESSING"
    # Nothing has gone back yet: the views show money moved, not money promised.
    assert (await merchant.trade(order))["refunds"] == []

    event, notice = merchant.opened(await inbox.next(f"{order}-refunds"))
    assert (event["event_type"], event["resource"]["original_type"]) == ("REFUND.SUCCESS", "refund")
    assert (notice["refund_status"], notice["refund_id"]) == ("SUCCESS", first["refund_id"])
    assert (notice["out_trade_no"], notice["mchid"]) == (order, MCHID)
    assert notice["amount"] == {
        "total": 2970,
        "refund": 1000,
        "payer_total": 2970,
        "payer_refund": 1000,
    }
    done = (await merchant.refund_query(f"{order}-r1")).json()
    assert (done["status"], done["success_time"]) == ("SUCCESS", notice["success_time"])
    assert (await merchant.query(order)).json()["trade_state"] == "REFUND"

    unknown = await merchant.refund_query(f"{order}-r9")
    assert error(unknown) == (404, "RESOURCE_NOT_EXISTS")


async def test_one_refund_per_out_refund_no(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.native(order)
    await merchant.buyer("pay", order)
    merchant.opened(await inbox.next(order))

    first = (await merchant.refund(order, f"{order}-r1", 1000)).json()
    repeat = await merchant.refund(order, f"{order}-r1", 1000)
    assert repeat.status_code == 200 and repeat.json()["refund_id"] == first["refund_id"]
    changed = await merchant.refund(order, f"{order}-r1", 500)
    assert error(changed) == (400, "INVALID_REQUEST")
    wrong_total = await merchant.refund(
        order, f"{order}-r2", 100, amount={"refund": 100, "total": 3000, "currency": "CNY"}
    )
    assert error(wrong_total) == (400, "INVALID_REQUEST")
    # A refund still processing holds its amount: 19.70 is all that is left.
    too_much = await merchant.refund(order, f"{order}-r2", 1971)
    assert error(too_much) == (400, "INVALID_REQUEST")
    rest = await merchant.refund(order, f"{order}-r2", 1970, transaction_id=first["transaction_id"])
    assert rest.status_code == 200

    # Told once per refund, each after its money went back.
    refunds = [merchant.opened(await inbox.next(order))[1] for _ in range(2)]
    assert sorted(notice["amount"]["refund"] for notice in refunds) == [1000, 1970]
    view = await merchant.trade(order)
    assert view["refunded_amount"] == "29.70"
    assert sorted(r["out_request_no"] for r in view["refunds"]) == [f"{order}-r1", f"{order}-r2"]
    assert [note["kind"] for note in view["notifications"]] == ["payment", "refund", "refund"]
    ledger = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/ledger")).json()
    line = next(line for line in ledger["trades"] if line["out_trade_no"] == order)
    assert line == {
        "gateway": "wechatpay",
        "out_trade_no": order,
        "captured": "29.70",
        "refunded": "29.70",
    }
    listed = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades")).json()
    assert next(view for view in listed if view["out_trade_no"] == order)["status"] == "REFUND"


async def test_requests_are_authenticated(merchant: Merchant, order: str) -> None:
    native = "/v3/pay/transactions/native"
    payload = merchant.order(order)
    tampered = json.dumps({**payload, "amount": {"total": 1, "currency": "CNY"}}).encode()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    for refused in (
        await merchant.send("POST", native, payload, body=tampered),
        await merchant.send("POST", native, payload, key=forger),
        await merchant.send("POST", native, payload, mchid="1900000109"),
        await merchant.send("POST", native, payload, serial="0" * 40),
        await merchant.send("POST", native, payload, timestamp=now - 300),
        await merchant.send("POST", native, payload, timestamp=now + 310),
        await merchant.http.post(f"{merchant.sandbox_url}{native}", json=payload),
    ):
        merchant.verified(refused)
        assert error(refused) == (401, "SIGN_ERROR"), refused.text
        assert refused.json()["message"]
    # A signature over another path or query is no signature for this one.
    target = f"/v3/pay/transactions/out-trade-no/{order}?mchid={MCHID}"
    signed = await merchant.send("GET", target)
    assert error(signed) == (404, "ORDER_NOT_EXIST")
    moved = await merchant.http.get(
        f"{merchant.sandbox_url}{target}&x=1",
        headers={"Authorization": signed.request.headers["Authorization"]},
    )
    assert error(moved) == (401, "SIGN_ERROR")

    late_but_fresh = await merchant.send("POST", native, payload, timestamp=now - 290)
    assert merchant.verified(late_but_fresh).status_code == 200
    assert (await merchant.trade(order))["status"] == "NOTPAY"


async def test_transient_failures_in_each_mode(merchant: Merchant, order: str) -> None:
    await merchant.native(order)
    await merchant.faults(fail_methods={"wechatpay.query": 1})
    assert error(await merchant.query(order)) == (500, "SYSTEM_ERROR")
    assert (await merchant.query(order)).json()["trade_state"] == "NOTPAY"
    armed = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/faults")).json()
    assert armed["fail_methods"] == {"wechatpay.query": 0}

    await merchant.faults(fail_methods={"wechatpay.native": 1}, fail_mode="http_503")
    lost = await merchant.send("POST", "/v3/pay/transactions/native", merchant.order(f"{order}b"))
    assert lost.status_code == 503 and "wechatpay-signature" not in lost.headers
    assert (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades/{order}b")).is_error

    await merchant.faults(
        fail_methods={"wechatpay.close": 1}, fail_mode="applied_then_system_error"
    )
    assert error(await merchant.close(order)) == (500, "SYSTEM_ERROR")
    assert (await merchant.query(order)).json()["trade_state"] == "CLOSED"


async def test_a_fail_rate_fails_every_method_and_the_sandbox_counts_each(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    fired = f"{merchant.sandbox_url}/sandbox/faults/fired"
    before = (await merchant.http.get(fired)).json()
    await merchant.faults(fail_rate=1, drop_rate=1)
    native = await merchant.call("POST", "/v3/pay/transactions/native", merchant.order(order))
    assert error(native) == (500, "SYSTEM_ERROR")
    assert error(await merchant.query(order)) == (500, "SYSTEM_ERROR")
    assert error(await merchant.close(order)) == (500, "SYSTEM_ERROR")
    await merchant.faults(drop_rate=1)
    await merchant.native(order)
    # The buyer's side never fails, and its payment's notification is lost.
    assert (await merchant.buyer("pay", order)).json()["status"] == "SUCCESS"
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.5)
    after = (await merchant.http.get(fired)).json()

    def more(field: str, method: str) -> int:
        return int(after[field].get(method, 0) - before[field].get(method, 0))

    methods = ("wechatpay.native", "wechatpay.query", "wechatpay.close")
    assert [more("gateway_calls", method) for method in methods] == [2, 1, 1]
    assert [more("gateway_calls_failed", method) for method in methods] == [1, 1, 1]
    assert after["notifications_dropped"] - before["notifications_dropped"] == 1


async def test_a_refund_can_take_effect_behind_a_system_error(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.native(order)
    await merchant.buyer("pay", order)
    merchant.opened(await inbox.next(order))
    await merchant.faults(
        fail_methods={"wechatpay.refund": 1, "wechatpay.refund_query": 1},
        fail_mode="applied_then_system_error",
    )
    assert error(await merchant.refund(order, f"{order}-r1", 2970)) == (500, "SYSTEM_ERROR")
    assert error(await merchant.refund_query(f"{order}-r1")) == (500, "SYSTEM_ERROR")
    retry = await merchant.refund(order, f"{order}-r1", 2970)
    assert retry.status_code == 200
    _, notice = merchant.opened(await inbox.next(order))
    assert notice["refund_id"] == retry.json()["refund_id"]
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=REFUND_SECONDS + 0.2)
    ledger = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/ledger")).json()
    line = next(line for line in ledger["trades"] if line["out_trade_no"] == order)
    assert (line["captured"], line["refunded"]) == ("29.70", "29.70")


async def test_dropped_notification_is_never_sent(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(drop_notifications=1)
    await merchant.native(order)
    await merchant.buyer("pay", order)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.5)
    [lost] = (await merchant.trade(order))["notifications"]
    assert lost["lost"] and lost["attempts"] == 0
    assert (await merchant.query(order)).json()["trade_state"] == "SUCCESS"


async def test_duplicated_notification_arrives_twice_with_one_id(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(duplicate_notifications=2, notification_delay_seconds=0.2)
    await merchant.native(order)
    await merchant.buyer("pay", order)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.1)
    copies = [await inbox.next(order) for _ in range(2)]
    events = [merchant.opened(copy)[0] for copy in copies]
    assert events[0]["id"] == events[1]["id"] and copies[0].body == copies[1].body

    async def both_sent() -> bool:
        [note] = (await merchant.trade(order))["notifications"]
        return bool(note["delivered"]) and note["attempts"] == 2

    await eventually(both_sent)


async def test_expired_code_is_refused_unless_the_fault_accepts_it(
    merchant: Merchant, order: str
) -> None:
    past = (datetime.now(CHINA) - timedelta(minutes=1)).isoformat(timespec="seconds")
    await merchant.native(order, time_expire=past)
    refused = await merchant.buyer("pay", order)
    assert refused.status_code == 409
    assert refused.json()["detail"]["reason"] == "QR_CODE_EXPIRED"
    assert (await merchant.query(order)).json()["trade_state"] == "NOTPAY"

    await merchant.faults(accept_expired_qr=True)
    assert (await merchant.buyer("pay", order)).json()["status"] == "SUCCESS"


async def test_buyer_pays_through_the_code_url_page(merchant: Merchant, order: str) -> None:
    code_url = await merchant.native(order)
    page = await merchant.http.get(code_url)
    assert page.status_code == 200
    pr = code_url.split("pr=")[1]
    assert "29.70" in page.text and f'action="/wxpay/bizpayurl?pr={pr}"' in page.text
    assert (await merchant.buyer("scan", order)).json()["status"] == "NOTPAY"
    result = await merchant.http.post(code_url)
    assert result.status_code == 200 and "SUCCESS" in result.text
    assert (await merchant.http.post(code_url)).status_code == 409
    finish = await merchant.buyer("finish", order)
    assert finish.status_code == 409 and "Alipay" in finish.json()["detail"]["message"]
    assert (await merchant.http.get(f"{code_url}x")).status_code == 404
    assert (await merchant.buyer("pay", f"{order}x")).status_code == 404
