"""AlipayClient against a fake Alipay OpenAPI gateway, faked only at the wire (MockTransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateways import alipay_signing
from gateways.alipay import AlipayClient, AlipayConfig, RefundResult, RefundState, TradeState
from gateways.errors import (
    GatewayRejected,
    GatewayResponseInvalid,
    GatewayUnavailable,
    TradeAlreadyPaid,
    TradeFinished,
    TradeNotFound,
    TradeStatusError,
)

GATEWAY_URL = "https://openapi.alipay.test/gateway.do"
APP_ID = "2021000000000001"
NOTIFY_URL = "https://shop.test/v1/callbacks/alipay"
SUCCESS = {"code": "10000", "msg": "Success"}
# 2024-01-01 16:30 UTC is already the next day in China.
EXPIRES = datetime(2024, 1, 1, 16, 30, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass(frozen=True)
class Keys:
    app: rsa.RSAPrivateKey
    alipay: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        app=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        alipay=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


class FakeAlipay:
    """Alipay's side of the wire: checks our signature, answers with signed JSON."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self.nodes: dict[str, dict[str, str]] = {}
        self.forms: list[dict[str, str]] = []
        self.requests: list[httpx.Request] = []
        self.signed = True
        self.tamper: Callable[[str], str] = lambda body: body

    def reply(self, method: str, **fields: str) -> None:
        self.nodes[method] = {**SUCCESS, **fields}

    def refuse(self, method: str, *, code: str = "40004", sub_code: str, **fields: str) -> None:
        self.nodes[method] = {
            "code": code,
            "msg": "Business Failed",
            "sub_code": sub_code,
            "sub_msg": "交易状态不合法",
            **fields,
        }

    def biz(self) -> dict[str, str]:
        content: dict[str, str] = json.loads(self.forms[-1]["biz_content"])
        return content

    def handle(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode("utf-8"), keep_blank_values=True))
        self.forms.append(form)
        self.requests.append(request)
        message = alipay_signing.signing_string(form, unsigned=alipay_signing.REQUEST_UNSIGNED)
        if not alipay_signing.verify(message, form.get("sign", ""), self._keys.app.public_key()):
            refusal = {
                "code": "40002",
                "msg": "Invalid Arguments",
                "sub_code": "isv.invalid-signature",
            }
            return self._respond(json.dumps({"error_response": refusal}))
        method = form["method"]
        # Alipay's own spacing, unlike our compact JSON: the signature covers the text as sent.
        node_text = json.dumps(self.nodes[method], ensure_ascii=False)
        name = alipay_signing.response_node_name(method)
        if not self.signed:
            return self._respond(f'{{"{name}": {node_text}}}')
        signature = alipay_signing.sign(node_text, self._keys.alipay)
        return self._respond(self.tamper(f'{{"{name}": {node_text}, "sign": "{signature}"}}'))

    @staticmethod
    def _respond(body: str) -> httpx.Response:
        return httpx.Response(
            200, content=body.encode("utf-8"), headers={"Content-Type": "text/html;charset=utf-8"}
        )


def make_config(
    keys: Keys,
    *,
    app_key: rsa.RSAPrivateKey | None = None,
    alipay_key: rsa.RSAPublicKey | None = None,
    seller_id: str | None = None,
) -> AlipayConfig:
    return AlipayConfig(
        gateway_url=GATEWAY_URL,
        app_id=APP_ID,
        app_private_key=app_key or keys.app,
        alipay_public_key=alipay_key or keys.alipay.public_key(),
        notify_url=NOTIFY_URL,
        seller_id=seller_id,
    )


@asynccontextmanager
async def alipay_client(config: AlipayConfig, handler: Handler) -> AsyncIterator[AlipayClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield AlipayClient(config, http)


@pytest.fixture
def fake(keys: Keys) -> FakeAlipay:
    return FakeAlipay(keys)


@pytest.fixture
async def client(keys: Keys, fake: FakeAlipay) -> AsyncIterator[AlipayClient]:
    async with alipay_client(make_config(keys), fake.handle) as alipay:
        yield alipay


async def precreate(client: AlipayClient, amount: Decimal = Decimal("29.70")) -> str:
    return await client.precreate(
        out_trade_no="o-1", amount=amount, subject="场地预订", time_expire=EXPIRES
    )


# --- requests -------------------------------------------------------------------------------


async def test_precreate_posts_a_signed_form_with_alipays_common_params(
    client: AlipayClient, fake: FakeAlipay, keys: Keys
) -> None:
    fake.reply("alipay.trade.precreate", out_trade_no="o-1", qr_code="https://qr.alipay.com/x")

    assert await precreate(client, Decimal("29.7")) == "https://qr.alipay.com/x"

    form = fake.forms[-1]
    assert set(form) == {
        "app_id",
        "method",
        "format",
        "charset",
        "sign_type",
        "timestamp",
        "version",
        "notify_url",
        "biz_content",
        "sign",
    }
    assert form["app_id"] == APP_ID
    assert form["method"] == "alipay.trade.precreate"
    assert (form["format"], form["charset"], form["sign_type"], form["version"]) == (
        "JSON",
        "utf-8",
        "RSA2",
        "1.0",
    )
    assert form["notify_url"] == NOTIFY_URL
    assert form["biz_content"] == (
        '{"out_trade_no":"o-1","total_amount":"29.70","subject":"场地预订",'
        '"time_expire":"2024-01-02 00:30:00"}'
    )
    signed_text = (
        f"app_id={APP_ID}&biz_content={form['biz_content']}&charset=utf-8&format=JSON"
        f"&method=alipay.trade.precreate&notify_url={NOTIFY_URL}&sign_type=RSA2"
        f"&timestamp={form['timestamp']}&version=1.0"
    )
    assert alipay_signing.verify(signed_text, form["sign"], keys.app.public_key())


async def test_request_is_utf8_form_with_charset_in_the_url(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    fake.reply("alipay.trade.precreate", qr_code="q")

    await precreate(client)

    request = fake.requests[-1]
    assert request.method == "POST"
    assert request.url.params["charset"] == "utf-8"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"


async def test_timestamp_is_now_in_china_time(client: AlipayClient, fake: FakeAlipay) -> None:
    fake.reply("alipay.trade.close", out_trade_no="o-1")

    await client.close(out_trade_no="o-1")

    sent = datetime.strptime(fake.forms[-1]["timestamp"], "%Y-%m-%d %H:%M:%S")
    china_now = datetime.now(UTC).astimezone(timezone(timedelta(hours=8))).replace(tzinfo=None)
    assert abs(sent - china_now) < timedelta(seconds=5)


@pytest.mark.parametrize(
    ("time_expire", "sent"),
    [
        (datetime(2024, 1, 1, 16, 30, tzinfo=UTC), "2024-01-02 00:30:00"),
        (
            datetime(2024, 1, 1, 11, 30, 15, tzinfo=timezone(timedelta(hours=-5))),
            "2024-01-02 00:30:15",
        ),
    ],
)
async def test_time_expire_is_sent_in_china_time(
    client: AlipayClient, fake: FakeAlipay, time_expire: datetime, sent: str
) -> None:
    fake.reply("alipay.trade.precreate", qr_code="q")

    await client.precreate(
        out_trade_no="o-1", amount=Decimal("1"), subject="s", time_expire=time_expire
    )

    assert fake.biz()["time_expire"] == sent


async def test_naive_time_expire_is_refused_before_sending(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.precreate(
            out_trade_no="o-1", amount=Decimal("1"), subject="s", time_expire=datetime(2024, 1, 1)
        )
    assert fake.forms == []


@pytest.mark.parametrize("amount", ["0", "-1.00", "29.701", "NaN", "100000000.01"])
async def test_amount_alipay_cannot_take_is_refused_before_sending(
    client: AlipayClient, fake: FakeAlipay, amount: str
) -> None:
    with pytest.raises(ValueError, match="not an amount Alipay takes"):
        await precreate(client, Decimal(amount))
    assert fake.forms == []


async def test_precreate_names_the_configured_seller(keys: Keys, fake: FakeAlipay) -> None:
    fake.reply("alipay.trade.precreate", qr_code="q")

    async with alipay_client(make_config(keys, seller_id="2088000000000001"), fake.handle) as c:
        await precreate(c)

    assert fake.biz()["seller_id"] == "2088000000000001"


# --- answers --------------------------------------------------------------------------------


async def test_query_reads_decimal_amount_and_utc_payment_time(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    fake.reply(
        "alipay.trade.query",
        out_trade_no="o-1",
        trade_no="2024010222001",
        trade_status="TRADE_SUCCESS",
        total_amount="29.70",
        send_pay_date="2024-01-02 00:30:05",
    )

    state = await client.query(out_trade_no="o-1")

    assert fake.biz() == {"out_trade_no": "o-1"}
    assert state == TradeState(
        out_trade_no="o-1",
        trade_no="2024010222001",
        trade_status="TRADE_SUCCESS",
        total_amount=Decimal("29.70"),
        paid_at=datetime(2024, 1, 1, 16, 30, 5, tzinfo=UTC),
    )
    assert isinstance(state.total_amount, Decimal)


async def test_query_of_unpaid_trade_has_no_payment_time(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    fake.reply("alipay.trade.query", trade_status="WAIT_BUYER_PAY", total_amount="0.01")

    state = await client.query(out_trade_no="o-1")

    assert (state.trade_status, state.total_amount, state.paid_at) == (
        "WAIT_BUYER_PAY",
        Decimal("0.01"),
        None,
    )


@pytest.mark.parametrize(("fund_change", "moved"), [("Y", True), ("N", False)])
async def test_refund_sends_request_number_and_reads_fund_change(
    client: AlipayClient, fake: FakeAlipay, fund_change: str, moved: bool
) -> None:
    fake.reply(
        "alipay.trade.refund",
        out_trade_no="o-1",
        trade_no="2024010222001",
        fund_change=fund_change,
        refund_fee="10.00",
    )

    result = await client.refund(
        out_trade_no="o-1", amount=Decimal("10"), out_request_no="o-1-refund"
    )

    assert fake.biz() == {
        "out_trade_no": "o-1",
        "refund_amount": "10.00",
        "out_request_no": "o-1-refund",
    }
    assert result == RefundResult(
        fund_change=moved, refund_fee=Decimal("10.00"), trade_no="2024010222001"
    )


async def test_refund_query_succeeds_only_on_refund_success(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    method = "alipay.trade.fastpay.refund.query"
    fake.reply(method, out_request_no="r-1", refund_status="REFUND_SUCCESS", refund_amount="9.90")
    done = await client.refund_query(out_trade_no="o-1", out_request_no="r-1")
    fake.reply(method, out_request_no="r-1")
    unknown = await client.refund_query(out_trade_no="o-1", out_request_no="r-1")

    assert fake.biz() == {"out_trade_no": "o-1", "out_request_no": "r-1"}
    assert done == RefundState(succeeded=True, refund_amount=Decimal("9.90"))
    assert unknown == RefundState(succeeded=False, refund_amount=None)


# --- answers we must not believe --------------------------------------------------------------


async def test_tampered_answer_is_invalid(client: AlipayClient, fake: FakeAlipay) -> None:
    fake.reply("alipay.trade.query", trade_status="WAIT_BUYER_PAY", total_amount="29.70")
    fake.tamper = lambda body: body.replace("WAIT_BUYER_PAY", "TRADE_SUCCESS")

    with pytest.raises(GatewayResponseInvalid, match="does not verify"):
        await client.query(out_trade_no="o-1")


async def test_answer_signed_with_another_key_is_invalid(keys: Keys, fake: FakeAlipay) -> None:
    fake.reply("alipay.trade.query", trade_status="TRADE_SUCCESS", total_amount="29.70")
    config = make_config(keys, alipay_key=keys.app.public_key())

    async with alipay_client(config, fake.handle) as client:
        with pytest.raises(GatewayResponseInvalid, match="does not verify"):
            await client.query(out_trade_no="o-1")


async def test_unsigned_success_is_invalid(client: AlipayClient, fake: FakeAlipay) -> None:
    fake.reply("alipay.trade.query", trade_status="TRADE_SUCCESS", total_amount="29.70")
    fake.signed = False

    with pytest.raises(GatewayResponseInvalid, match="not signed"):
        await client.query(out_trade_no="o-1")


async def test_signed_answer_about_another_trade_is_invalid(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    fake.reply(
        "alipay.trade.query", out_trade_no="o-2", trade_status="TRADE_SUCCESS", total_amount="1.00"
    )

    with pytest.raises(GatewayResponseInvalid, match="out_trade_no o-2, not o-1"):
        await client.query(out_trade_no="o-1")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"total_amount": "29.70"}, "has no trade_status"),
        ({"trade_status": "TRADE_SUCCESS", "total_amount": "29.7O"}, "not an amount"),
        (
            {"trade_status": "TRADE_SUCCESS", "total_amount": "1.00", "send_pay_date": "today"},
            "not a time",
        ),
    ],
)
async def test_signed_answer_with_unreadable_fields_is_invalid(
    client: AlipayClient, fake: FakeAlipay, fields: dict[str, str], problem: str
) -> None:
    fake.reply("alipay.trade.query", **fields)

    with pytest.raises(GatewayResponseInvalid, match=problem):
        await client.query(out_trade_no="o-1")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>bad gateway</html>", "not JSON"),
        (
            '{"other_response": {"code": "10000"}, "sign": "x"}',
            "has no alipay_trade_query_response",
        ),
    ],
)
async def test_unreadable_answer_is_invalid(keys: Keys, body: str, problem: str) -> None:
    async with alipay_client(make_config(keys), lambda _: httpx.Response(200, text=body)) as client:
        with pytest.raises(GatewayResponseInvalid, match=problem):
            await client.query(out_trade_no="o-1")


# --- refusals -------------------------------------------------------------------------------

Call = Callable[[AlipayClient], Awaitable[object]]
CALLS: dict[str, Call] = {
    "alipay.trade.precreate": precreate,
    "alipay.trade.query": lambda c: c.query(out_trade_no="o-1"),
    "alipay.trade.close": lambda c: c.close(out_trade_no="o-1"),
    "alipay.trade.refund": lambda c: c.refund(
        out_trade_no="o-1", amount=Decimal("1.00"), out_request_no="r-1"
    ),
}


@pytest.mark.parametrize(
    ("method", "sub_code", "error"),
    [
        ("alipay.trade.query", "ACQ.TRADE_NOT_EXIST", TradeNotFound),
        ("alipay.trade.close", "ACQ.TRADE_NOT_EXIST", TradeNotFound),
        ("alipay.trade.close", "ACQ.TRADE_STATUS_ERROR", TradeStatusError),
        ("alipay.trade.precreate", "ACQ.TRADE_HAS_SUCCESS", TradeAlreadyPaid),
        ("alipay.trade.refund", "ACQ.TRADE_HAS_FINISHED", TradeFinished),
        ("alipay.trade.refund", "ACQ.SELLER_BALANCE_NOT_ENOUGH", GatewayRejected),
    ],
)
async def test_signed_refusal_maps_to_its_typed_error(
    client: AlipayClient,
    fake: FakeAlipay,
    method: str,
    sub_code: str,
    error: type[GatewayRejected],
) -> None:
    fake.refuse(method, sub_code=sub_code)

    with pytest.raises(GatewayRejected) as caught:
        await CALLS[method](client)

    assert type(caught.value) is error
    assert (caught.value.code, caught.value.sub_code, caught.value.sub_msg) == (
        "40004",
        sub_code,
        "交易状态不合法",
    )
    assert str(caught.value) == f"the gateway refused {method}: {sub_code} (交易状态不合法)"


@pytest.mark.parametrize(
    ("code", "sub_code"), [("40004", "ACQ.SYSTEM_ERROR"), ("20000", "isp.unknow-error")]
)
async def test_alipay_system_errors_are_transient(
    client: AlipayClient, fake: FakeAlipay, code: str, sub_code: str
) -> None:
    fake.refuse("alipay.trade.close", code=code, sub_code=sub_code)

    with pytest.raises(GatewayUnavailable, match=sub_code):
        await client.close(out_trade_no="o-1")


async def test_unsigned_refusal_is_never_a_specific_answer(
    client: AlipayClient, fake: FakeAlipay
) -> None:
    # A forged "trade does not exist" must not let a caller conclude nobody paid.
    fake.refuse("alipay.trade.close", sub_code="ACQ.TRADE_NOT_EXIST")
    fake.signed = False

    with pytest.raises(GatewayRejected) as caught:
        await client.close(out_trade_no="o-1")

    assert type(caught.value) is GatewayRejected
    assert caught.value.sub_code == "ACQ.TRADE_NOT_EXIST"


async def test_request_signed_with_wrong_key_gets_error_response(
    keys: Keys, fake: FakeAlipay
) -> None:
    async with alipay_client(make_config(keys, app_key=keys.alipay), fake.handle) as client:
        with pytest.raises(GatewayRejected) as caught:
            await client.close(out_trade_no="o-1")

    assert type(caught.value) is GatewayRejected
    assert (caught.value.code, caught.value.sub_code) == ("40002", "isv.invalid-signature")


# --- transport ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_http_5xx_is_unavailable(keys: Keys, status: int) -> None:
    async with alipay_client(make_config(keys), lambda _: httpx.Response(status)) as client:
        with pytest.raises(GatewayUnavailable, match=f"HTTP {status}"):
            await client.close(out_trade_no="o-1")


async def test_other_http_status_is_invalid(keys: Keys) -> None:
    async with alipay_client(make_config(keys), lambda _: httpx.Response(404)) as client:
        with pytest.raises(GatewayResponseInvalid, match="HTTP 404"):
            await client.close(out_trade_no="o-1")


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")]
)
async def test_transport_failure_is_unavailable(keys: Keys, failure: httpx.TransportError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    async with alipay_client(make_config(keys), fail) as client:
        with pytest.raises(GatewayUnavailable, match=type(failure).__name__) as caught:
            await client.close(out_trade_no="o-1")

    assert caught.value.__cause__ is failure
