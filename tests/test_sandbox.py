"""The sandbox gateway over the real wire: a merchant with plain httpx and our signing
primitives on one side, a real notification receiver on the other, uvicorn in between."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from core.settings import SANDBOX_APP_ID
from gateways.alipay_signing import (
    NOTIFICATION_UNSIGNED,
    generate_key_pair,
    load_private_key,
    load_public_key,
    response_node_name,
    response_node_text,
    sign_params,
    signing_string,
    verify,
)
from sandbox import SandboxSettings, create_app
from stack.ports import free_port
from tests.servers import serving

CHINA = timezone(timedelta(hours=8))
SELLER_ID = "2088000000000042"
# Alipay's 4-minute first retry becomes 0.24 s.
RETRY_SCALE = 0.001


class Receiver:
    """The merchant's notify_url: one channel per test, answers scripted per channel."""

    def __init__(self) -> None:
        self.received: defaultdict[str, asyncio.Queue[dict[str, str]]] = defaultdict(asyncio.Queue)
        self.replies: dict[str, list[str]] = {}
        self.app = FastAPI()
        self.app.add_api_route("/notify/{channel}", self._endpoint, methods=["POST"])

    async def next(self, channel: str, timeout: float = 5.0) -> dict[str, str]:
        return await asyncio.wait_for(self.received[channel].get(), timeout)

    async def _endpoint(self, channel: str, request: Request) -> PlainTextResponse:
        async with request.form() as form:
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
        script = self.replies.get(channel)
        reply = script.pop(0) if script else "success"
        await self.received[channel].put(fields)
        return PlainTextResponse(reply)


@dataclass
class Merchant:
    """Our side of the wire, written from the protocol alone."""

    http: httpx.AsyncClient
    sandbox_url: str
    receiver_url: str
    private_key: rsa.RSAPrivateKey
    alipay_public_key: rsa.RSAPublicKey

    def notify_url(self, channel: str) -> str:
        return f"{self.receiver_url}/notify/{channel}"

    def params(
        self, method: str, biz: dict[str, Any], *, notify_url: str | None = None
    ) -> dict[str, str]:
        params = {
            "app_id": SANDBOX_APP_ID,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": datetime.now(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False),
        }
        if notify_url is not None:
            params["notify_url"] = notify_url
        return params

    async def post(self, params: dict[str, str], node_name: str) -> dict[str, Any]:
        """The response node, after checking the signature over its exact text."""
        response = await self.http.post(f"{self.sandbox_url}/gateway.do", data=params)
        assert response.status_code == 200, response.text
        text = response_node_text(response.text, node_name)
        assert text is not None, response.text
        assert verify(text, json.loads(response.text)["sign"], self.alipay_public_key)
        node: dict[str, Any] = json.loads(text)
        return node

    async def call(
        self, method: str, biz: dict[str, Any], *, notify_url: str | None = None
    ) -> dict[str, Any]:
        params = sign_params(self.params(method, biz, notify_url=notify_url), self.private_key)
        return await self.post(params, response_node_name(method))

    async def precreate(self, out_trade_no: str, amount: str = "29.70") -> dict[str, Any]:
        biz = {"out_trade_no": out_trade_no, "total_amount": amount, "subject": "3 days"}
        node = await self.call(
            "alipay.trade.precreate", biz, notify_url=self.notify_url(out_trade_no)
        )
        assert node["code"] == "10000", node
        return node

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

    async def fired(self) -> Counter[str]:
        """What the faults did so far, flat: `failed alipay.trade.query`, `dropped`, ..."""
        return flat_counts((await self.http.get(f"{self.sandbox_url}/sandbox/faults/fired")).json())

    def verified(self, fields: dict[str, str]) -> dict[str, str]:
        """A notification checked as Alipay tells merchants to check it."""
        message = signing_string(fields, unsigned=NOTIFICATION_UNSIGNED)
        assert fields["sign_type"] == "RSA2"
        assert verify(message, fields["sign"], self.alipay_public_key)
        assert fields["app_id"] == SANDBOX_APP_ID
        assert fields["seller_id"] == SELLER_ID
        assert fields["notify_type"] == "trade_status_sync"
        return fields


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with serving(receiver.app, free_port()) as url:
        yield receiver, url


@pytest.fixture(scope="session")
async def merchant(
    tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, str]
) -> AsyncIterator[Merchant]:
    keys: Path = tmp_path_factory.mktemp("keys")
    generate_key_pair(keys / "app_private.pem", keys / "app_public.pem")
    port = free_port()
    settings = SandboxSettings(
        port=port,
        app_public_key_file=keys / "app_public.pem",
        private_key_file=keys / "sandbox_private.pem",
        public_key_file=keys / "sandbox_public.pem",
        seller_id=SELLER_ID,
        notify_retry_scale=RETRY_SCALE,
    )
    async with (
        serving(create_app(settings), port) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        yield Merchant(
            http=http,
            sandbox_url=url,
            receiver_url=receiver[1],
            private_key=load_private_key(keys / "app_private.pem"),
            alipay_public_key=load_public_key(keys / "sandbox_public.pem"),
        )


@pytest.fixture(autouse=True)
async def no_faults(merchant: Merchant) -> None:
    response = await merchant.http.delete(f"{merchant.sandbox_url}/sandbox/faults")
    response.raise_for_status()


@pytest.fixture
def inbox(receiver: tuple[Receiver, str]) -> Receiver:
    return receiver[0]


@pytest.fixture
def order() -> str:
    return f"T{uuid.uuid4().hex}"


def flat_counts(fired: dict[str, Any]) -> Counter[str]:
    """`GET /sandbox/faults/fired` as one counter, which subtracts: what fired in between."""
    counts: Counter[str] = Counter()
    counts.update({f"calls {method}": n for method, n in fired["gateway_calls"].items()})
    counts.update({f"failed {method}": n for method, n in fired["gateway_calls_failed"].items()})
    counts.update(dropped=fired["notifications_dropped"])
    counts.update(duplicated=fired["notifications_duplicated"])
    return counts


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def test_precreate_is_idempotent_and_no_trade_exists_before_the_scan(
    merchant: Merchant, order: str
) -> None:
    first = await merchant.precreate(order)
    assert first["qr_code"] == f"{merchant.sandbox_url}/qr/{order}"
    assert (await merchant.precreate(order))["qr_code"] == first["qr_code"]
    other_amount = await merchant.call(
        "alipay.trade.precreate",
        {"out_trade_no": order, "total_amount": "30.00", "subject": "3 days"},
    )
    assert other_amount["sub_code"] == "ACQ.CONTEXT_INCONSISTENT"

    unscanned = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert (unscanned["code"], unscanned["sub_code"]) == ("40004", "ACQ.TRADE_NOT_EXIST")

    assert (await merchant.buyer("scan", order)).status_code == 200
    waiting = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert waiting["code"] == "10000"
    assert waiting["trade_status"] == "WAIT_BUYER_PAY"
    assert waiting["total_amount"] == "29.70"
    assert len(waiting["trade_no"]) == 28 and waiting["trade_no"].isdigit()
    by_trade_no = await merchant.call("alipay.trade.query", {"trade_no": waiting["trade_no"]})
    assert by_trade_no["out_trade_no"] == order


async def test_close_of_a_scanned_trade_stops_payment(merchant: Merchant, order: str) -> None:
    await merchant.precreate(order)
    await merchant.buyer("scan", order)
    closed = await merchant.call("alipay.trade.close", {"out_trade_no": order})
    assert closed["code"] == "10000" and closed["out_trade_no"] == order
    query = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert query["trade_status"] == "TRADE_CLOSED"
    refused = await merchant.buyer("pay", order)
    assert refused.status_code == 409
    assert refused.json()["detail"]["reason"] == "ACQ.TRADE_HAS_CLOSE"
    again = await merchant.call("alipay.trade.close", {"out_trade_no": order})
    assert again["sub_code"] == "ACQ.TRADE_STATUS_ERROR"


async def test_close_before_the_scan_leaves_the_qr_code_payable(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.precreate(order)
    close = await merchant.call("alipay.trade.close", {"out_trade_no": order})
    assert close["sub_code"] == "ACQ.TRADE_NOT_EXIST"

    paid = await merchant.buyer("pay", order)
    assert paid.status_code == 200 and paid.json()["status"] == "TRADE_SUCCESS"
    notification = merchant.verified(await inbox.next(order))
    assert notification["out_trade_no"] == order
    assert notification["trade_status"] == "TRADE_SUCCESS"
    assert notification["total_amount"] == "29.70"
    assert notification["trade_no"] == paid.json()["trade_no"]
    query = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert query["trade_status"] == "TRADE_SUCCESS"
    assert query["send_pay_date"] == notification["gmt_payment"]


async def test_requests_are_authenticated(merchant: Merchant, order: str) -> None:
    biz = {"out_trade_no": order, "total_amount": "29.70", "subject": "3 days"}
    tampered = sign_params(merchant.params("alipay.trade.precreate", biz), merchant.private_key)
    tampered["biz_content"] = json.dumps({**biz, "total_amount": "0.01"})
    refused = await merchant.post(tampered, "alipay_trade_precreate_response")
    assert (refused["code"], refused["sub_code"]) == ("40002", "isv.invalid-signature")

    foreign = {**merchant.params("alipay.trade.precreate", biz), "app_id": "2021009999999999"}
    wrong_app = await merchant.post(
        sign_params(foreign, merchant.private_key), "alipay_trade_precreate_response"
    )
    assert wrong_app["sub_code"] == "isv.invalid-app-id"

    unknown = sign_params(merchant.params("alipay.trade.pay.now", biz), merchant.private_key)
    assert (await merchant.post(unknown, "error_response"))["sub_code"] == "isv.invalid-method"
    response = await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades/{order}")
    assert response.status_code == 404


async def test_biz_content_is_validated(merchant: Merchant, order: str) -> None:
    for biz in (
        {"out_trade_no": order, "total_amount": "29.701", "subject": "3 days"},
        {"out_trade_no": order, "total_amount": "0.00", "subject": "3 days"},
        {"out_trade_no": f"{order}-1", "total_amount": "29.70", "subject": "3 days"},
        {"out_trade_no": order, "total_amount": "29.70", "subject": "3 days", "time_expire": "x"},
    ):
        node = await merchant.call("alipay.trade.precreate", biz)
        assert (node["code"], node["sub_code"]) == ("40004", "ACQ.INVALID_PARAMETER"), biz


async def test_refunds_are_idempotent_per_out_request_no(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.precreate(order)
    await merchant.buyer("pay", order)
    payment = merchant.verified(await inbox.next(order))

    biz = {"out_trade_no": order, "refund_amount": "10.00", "out_request_no": "R1"}
    first = await merchant.call("alipay.trade.refund", biz)
    assert (first["code"], first["fund_change"], first["refund_fee"]) == ("10000", "Y", "10.00")
    repeat = await merchant.call("alipay.trade.refund", biz)
    assert (repeat["code"], repeat["fund_change"], repeat["refund_fee"]) == ("10000", "N", "10.00")
    changed = await merchant.call("alipay.trade.refund", {**biz, "refund_amount": "5.00"})
    assert changed["sub_code"] == "ACQ.DISCORDANT_REPEAT_REQUEST"

    partial = merchant.verified(await inbox.next(order))
    assert partial["trade_status"] == "TRADE_SUCCESS"
    assert (partial["refund_fee"], partial["out_biz_no"]) == ("10.00", "R1")
    assert partial["notify_id"] != payment["notify_id"] and "gmt_refund" in partial

    too_much = {"out_trade_no": order, "refund_amount": "19.71", "out_request_no": "R2"}
    over = await merchant.call("alipay.trade.refund", too_much)
    assert over["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    rest = await merchant.call("alipay.trade.refund", {**too_much, "refund_amount": "19.70"})
    assert (rest["fund_change"], rest["refund_fee"]) == ("Y", "29.70")

    full = merchant.verified(await inbox.next(order))
    assert full["trade_status"] == "TRADE_CLOSED"
    assert (full["refund_fee"], full["out_biz_no"]) == ("29.70", "R2") and "gmt_close" in full
    query = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert query["trade_status"] == "TRADE_CLOSED"

    found = await merchant.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": order, "out_request_no": "R1"}
    )
    assert found["refund_status"] == "REFUND_SUCCESS"
    assert (found["refund_amount"], found["total_amount"]) == ("10.00", "29.70")
    unknown = await merchant.call(
        "alipay.trade.fastpay.refund.query", {"out_trade_no": order, "out_request_no": "R9"}
    )
    assert unknown["code"] == "10000" and "refund_status" not in unknown

    view = await merchant.trade(order)
    assert view["refunded_amount"] == "29.70"
    assert [r["out_request_no"] for r in view["refunds"]] == ["R1", "R2"]
    ledger = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/ledger")).json()
    line = next(line for line in ledger["trades"] if line["out_trade_no"] == order)
    assert (line["captured"], line["refunded"]) == ("29.70", "29.70")


async def test_refund_needs_a_paid_unfinished_trade(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    biz = {"out_trade_no": order, "refund_amount": "1.00", "out_request_no": "R1"}
    await merchant.precreate(order)
    assert (await merchant.call("alipay.trade.refund", biz))["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    await merchant.buyer("scan", order)
    unpaid = await merchant.call("alipay.trade.refund", biz)
    assert unpaid["sub_code"] == "ACQ.TRADE_STATUS_ERROR"

    await merchant.buyer("pay", order)
    finished = await merchant.buyer("finish", order)
    assert finished.json()["status"] == "TRADE_FINISHED"
    assert merchant.verified(await inbox.next(order))["trade_status"] == "TRADE_SUCCESS"
    assert merchant.verified(await inbox.next(order))["trade_status"] == "TRADE_FINISHED"
    late = await merchant.call("alipay.trade.refund", biz)
    assert late["sub_code"] == "ACQ.TRADE_HAS_FINISHED"


async def test_notification_is_resent_until_the_merchant_says_success(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    inbox.replies[order] = ["fail", "SUCCESS"]
    await merchant.precreate(order)
    await merchant.buyer("pay", order)
    attempts = [merchant.verified(await inbox.next(order)) for _ in range(3)]
    assert len({fields["notify_id"] for fields in attempts}) == 1

    async def delivered() -> bool:
        [notification] = (await merchant.trade(order))["notifications"]
        return bool(notification["delivered"]) and notification["attempts"] == 3

    await eventually(delivered)


async def test_dropped_notification_is_never_sent_and_the_next_can_be_late(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(drop_notifications=1)
    await merchant.precreate(order)
    await merchant.buyer("pay", order)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.5)
    [lost] = (await merchant.trade(order))["notifications"]
    assert lost["lost"] and lost["attempts"] == 0

    await merchant.faults(notification_delay_seconds=0.3)
    await merchant.buyer("finish", order)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.15)
    assert merchant.verified(await inbox.next(order))["trade_status"] == "TRADE_FINISHED"


async def test_duplicated_notification_arrives_twice_with_one_notify_id(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(duplicate_notifications=2)
    await merchant.precreate(order)
    await merchant.buyer("pay", order)
    copies = [merchant.verified(await inbox.next(order)) for _ in range(2)]
    assert copies[0] == copies[1]

    async def both_sent() -> bool:
        [notification] = (await merchant.trade(order))["notifications"]
        return bool(notification["delivered"]) and notification["attempts"] == 2

    await eventually(both_sent)


async def test_payment_can_win_the_race_with_the_close(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.faults(pay_before_close=True)
    await merchant.precreate(order)
    close = await merchant.call("alipay.trade.close", {"out_trade_no": order})
    assert (close["code"], close["sub_code"]) == ("40004", "ACQ.TRADE_STATUS_ERROR")
    query = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert query["trade_status"] == "TRADE_SUCCESS"
    assert merchant.verified(await inbox.next(order))["trade_status"] == "TRADE_SUCCESS"


async def test_transient_failures(merchant: Merchant, order: str) -> None:
    await merchant.faults(fail_methods={"alipay.trade.query": 1})
    failed = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert (failed["code"], failed["sub_code"]) == ("20000", "ACQ.SYSTEM_ERROR")
    retried = await merchant.call("alipay.trade.query", {"out_trade_no": order})
    assert retried["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    armed = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/faults")).json()
    assert armed["fail_methods"] == {"alipay.trade.query": 0}

    await merchant.faults(fail_methods={"alipay.trade.precreate": 1}, fail_mode="http_503")
    params = merchant.params(
        "alipay.trade.precreate",
        {"out_trade_no": order, "total_amount": "29.70", "subject": "3 days"},
    )
    response = await merchant.http.post(
        f"{merchant.sandbox_url}/gateway.do", data=sign_params(params, merchant.private_key)
    )
    assert response.status_code == 503
    assert (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades/{order}")).is_error


async def test_a_fail_rate_fails_merchant_calls_at_random_as_its_seed_repeats(
    merchant: Merchant, order: str
) -> None:
    query = {"out_trade_no": order}

    async def failures(seed: int) -> list[bool]:
        await merchant.faults(fail_rate=0.5, seed=seed)
        nodes = [await merchant.call("alipay.trade.query", query) for _ in range(20)]
        return [node["sub_code"] == "ACQ.SYSTEM_ERROR" for node in nodes]

    before = await merchant.fired()
    first = await failures(7)
    assert 0 < sum(first) < 20
    assert await failures(7) == first
    other = await failures(8)
    assert other != first
    assert await merchant.fired() - before == Counter(
        {"calls alipay.trade.query": 60, "failed alipay.trade.query": 2 * sum(first) + sum(other)}
    )


async def test_at_a_fail_rate_of_one_every_merchant_call_fails_and_the_buyer_still_pays(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.precreate(order)
    await merchant.faults(fail_rate=1, fail_mode="http_503")
    before = await merchant.fired()
    assert (await merchant.buyer("pay", order)).status_code == 200
    assert merchant.verified(await inbox.next(order))["trade_status"] == "TRADE_SUCCESS"
    params = sign_params(
        merchant.params("alipay.trade.query", {"out_trade_no": order}), merchant.private_key
    )
    response = await merchant.http.post(f"{merchant.sandbox_url}/gateway.do", data=params)
    assert response.status_code == 503
    # Only the merchant's call counts: paying and notifying are not gateway calls.
    assert await merchant.fired() - before == Counter(
        {"calls alipay.trade.query": 1, "failed alipay.trade.query": 1}
    )


async def test_a_drop_rate_loses_notifications_and_the_sandbox_counts_what_it_did(
    merchant: Merchant, inbox: Receiver, order: str
) -> None:
    await merchant.precreate(order)
    before = await merchant.fired()
    await merchant.faults(drop_rate=1)
    await merchant.buyer("pay", order)
    with pytest.raises(TimeoutError):
        await inbox.next(order, timeout=0.5)
    [lost] = (await merchant.trade(order))["notifications"]
    assert lost["lost"] and lost["attempts"] == 0

    await merchant.faults(duplicate_notifications=3)
    await merchant.buyer("finish", order)
    copies = [merchant.verified(await inbox.next(order)) for _ in range(3)]
    assert {fields["trade_status"] for fields in copies} == {"TRADE_FINISHED"}
    assert await merchant.fired() - before == Counter({"dropped": 1, "duplicated": 2})


async def test_a_refund_can_take_effect_behind_a_system_error(
    merchant: Merchant, order: str
) -> None:
    await merchant.precreate(order)
    await merchant.buyer("pay", order)
    await merchant.faults(
        fail_methods={"alipay.trade.refund": 1}, fail_mode="applied_then_system_error"
    )
    biz = {"out_trade_no": order, "refund_amount": "29.70", "out_request_no": "R1"}
    assert (await merchant.call("alipay.trade.refund", biz))["sub_code"] == "ACQ.SYSTEM_ERROR"
    retry = await merchant.call("alipay.trade.refund", biz)
    assert (retry["code"], retry["fund_change"], retry["refund_fee"]) == ("10000", "N", "29.70")


async def test_expired_qr_code_is_refused_unless_the_fault_accepts_it(
    merchant: Merchant, order: str
) -> None:
    past = (datetime.now(CHINA) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    biz = {"out_trade_no": order, "total_amount": "29.70", "subject": "3 days"}
    node = await merchant.call("alipay.trade.precreate", {**biz, "time_expire": past})
    assert node["code"] == "10000"
    refused = await merchant.buyer("pay", order)
    assert refused.status_code == 409
    assert refused.json()["detail"]["reason"] == "QR_CODE_EXPIRED"

    await merchant.faults(accept_expired_qr=True)
    assert (await merchant.buyer("pay", order)).json()["status"] == "TRADE_SUCCESS"


async def test_buyer_pays_through_the_qr_page(merchant: Merchant, order: str) -> None:
    qr_code = (await merchant.precreate(order))["qr_code"]
    page = await merchant.http.get(qr_code)
    assert page.status_code == 200
    assert "29.70" in page.text and f'action="/qr/{order}/pay"' in page.text
    result = await merchant.http.post(f"{qr_code}/pay")
    assert result.status_code == 200 and "TRADE_SUCCESS" in result.text
    again = await merchant.http.post(f"{qr_code}/pay")
    assert again.status_code == 409
    assert (await merchant.buyer("pay", f"{order}x")).status_code == 404
    listed = (await merchant.http.get(f"{merchant.sandbox_url}/sandbox/trades")).json()
    assert {"out_trade_no": order, "status": "TRADE_SUCCESS"}.items() <= next(
        view for view in listed if view["out_trade_no"] == order
    ).items()
