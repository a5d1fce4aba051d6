"""Alipay OpenAPI client for face-to-face QR payments: precreate, query, close, refund.

Each call is a form POST signed with our app key (RSA2); each answer is believed only once its
signature verifies with Alipay's public key, and only the signed text itself is read.
`AlipayGateway` puts the client behind paysaga's gateway seam (`gateways.gateway`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from core.money import to_amount, to_cents
from gateways import alipay_signing
from gateways.alipay_formats import format_amount, format_time, parse_amount, parse_time
from gateways.errors import (
    GatewayError,
    GatewayRejected,
    GatewayResponseInvalid,
    GatewayUnavailable,
    TradeAlreadyPaid,
    TradeFinished,
    TradeNotFound,
    TradeStatusError,
)
from gateways.gateway import GatewayTrade

CHARSET = "utf-8"
SUCCESS = "10000"
# Alipay's "service currently unavailable" code: the same call may well succeed later.
SERVICE_UNAVAILABLE = "20000"
TRANSIENT_SUB_CODES = frozenset({"ACQ.SYSTEM_ERROR"})
REJECTIONS: dict[str, type[GatewayRejected]] = {
    "ACQ.TRADE_NOT_EXIST": TradeNotFound,
    "ACQ.TRADE_STATUS_ERROR": TradeStatusError,
    "ACQ.TRADE_HAS_SUCCESS": TradeAlreadyPaid,
    "ACQ.TRADE_HAS_FINISHED": TradeFinished,
}
# Paid trades. TRADE_FINISHED is the same payment told again once it can no longer be refunded.
PAID_STATES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
# Identifiers an answer echoes back from the request.
ECHOED_IDS = ("out_trade_no", "out_request_no")


@dataclass(frozen=True)
class AlipayConfig:
    gateway_url: str
    app_id: str
    app_private_key: rsa.RSAPrivateKey
    alipay_public_key: rsa.RSAPublicKey
    notify_url: str
    seller_id: str | None = None


@dataclass(frozen=True)
class TradeState:
    out_trade_no: str
    trade_no: str | None
    trade_status: str
    total_amount: Decimal
    paid_at: datetime | None


@dataclass(frozen=True)
class RefundResult:
    fund_change: bool
    refund_fee: Decimal
    trade_no: str | None


@dataclass(frozen=True)
class RefundState:
    succeeded: bool
    refund_amount: Decimal | None


class AlipayClient:
    def __init__(self, config: AlipayConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    async def precreate(
        self,
        *,
        out_trade_no: str,
        amount: Decimal,
        subject: str,
        time_expire: datetime,
        notify_url: str | None = None,
    ) -> str:
        """Create (or, for the same out_trade_no, get again) the trade's QR code content; its
        payment is notified to `notify_url`, or to the one configured if None."""
        biz = {
            "out_trade_no": out_trade_no,
            "total_amount": format_amount(amount),
            "subject": subject,
            "time_expire": format_time(time_expire),
        }
        if self._config.seller_id is not None:
            # Pins the payee to the seller that notifications are checked against.
            biz["seller_id"] = self._config.seller_id
        answer = await self._call("alipay.trade.precreate", biz, notify_url=notify_url)
        return answer.required("qr_code")

    async def query(self, *, out_trade_no: str) -> TradeState:
        """Raises TradeNotFound while nobody has scanned the QR code."""
        answer = await self._call("alipay.trade.query", {"out_trade_no": out_trade_no})
        return TradeState(
            out_trade_no=out_trade_no,
            trade_no=answer.text("trade_no"),
            trade_status=answer.required("trade_status"),
            total_amount=answer.amount("total_amount"),
            paid_at=answer.time("send_pay_date"),
        )

    async def close(self, *, out_trade_no: str) -> None:
        """Raises TradeNotFound if never scanned, TradeStatusError if no longer awaiting payment."""
        await self._call("alipay.trade.close", {"out_trade_no": out_trade_no})

    async def refund(
        self, *, out_trade_no: str, amount: Decimal, out_request_no: str
    ) -> RefundResult:
        """Alipay refunds once per out_request_no, so a retry must reuse the same one."""
        answer = await self._call(
            "alipay.trade.refund",
            {
                "out_trade_no": out_trade_no,
                "refund_amount": format_amount(amount),
                "out_request_no": out_request_no,
            },
        )
        return RefundResult(
            fund_change=answer.flag("fund_change"),
            refund_fee=answer.amount("refund_fee"),
            trade_no=answer.text("trade_no"),
        )

    async def refund_query(self, *, out_trade_no: str, out_request_no: str) -> RefundState:
        answer = await self._call(
            "alipay.trade.fastpay.refund.query",
            {"out_trade_no": out_trade_no, "out_request_no": out_request_no},
        )
        # No refund_status means Alipay has not received the refund or it failed.
        return RefundState(
            succeeded=answer.text("refund_status") == "REFUND_SUCCESS",
            refund_amount=answer.optional_amount("refund_amount"),
        )

    async def _call(
        self, method: str, biz: Mapping[str, str], *, notify_url: str | None = None
    ) -> _Answer:
        body = await self._post(method, self._signed_request(method, biz, notify_url))
        answer = _read_answer(method, body, self._config.alipay_public_key)
        answer.check_echoes(biz)
        return answer

    def _signed_request(
        self, method: str, biz: Mapping[str, str], notify_url: str | None
    ) -> dict[str, str]:
        params = {
            "app_id": self._config.app_id,
            "method": method,
            "format": "JSON",
            "charset": CHARSET,
            "sign_type": "RSA2",
            "timestamp": format_time(datetime.now(UTC)),
            "version": "1.0",
            "notify_url": notify_url or self._config.notify_url,
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        return alipay_signing.sign_params(params, self._config.app_private_key)

    async def _post(self, method: str, params: Mapping[str, str]) -> str:
        try:
            response = await self._http.post(
                self._config.gateway_url,
                # Alipay picks the charset for decoding a POST body from the URL, not the body;
                # without it a Chinese subject is read as GBK and the signature fails.
                params={"charset": CHARSET},
                data=params,
                headers={"Content-Type": f"application/x-www-form-urlencoded;charset={CHARSET}"},
            )
        except httpx.TransportError as exc:
            raise GatewayUnavailable(
                f"Alipay did not answer {method}: {type(exc).__name__} {exc}"
            ) from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"Alipay answered {method} with HTTP {response.status_code}")
        if response.status_code != 200:
            raise GatewayResponseInvalid(
                f"Alipay answered {method} with HTTP {response.status_code}"
            )
        try:
            return response.content.decode(CHARSET)
        except UnicodeDecodeError as exc:
            raise GatewayResponseInvalid(f"Alipay's answer to {method} is not {CHARSET}") from exc


class AlipayGateway:
    """Alipay as paysaga's `PaymentGateway`: cents in, Alipay's yuan strings on the wire."""

    def __init__(self, client: AlipayClient) -> None:
        self._client = client

    async def create_qr_payment(
        self,
        *,
        out_trade_no: str,
        amount_cents: int,
        subject: str,
        expires_at: datetime,
        notify_url: str | None = None,
    ) -> str:
        return await self._client.precreate(
            out_trade_no=out_trade_no,
            amount=to_amount(amount_cents),
            subject=subject,
            time_expire=expires_at,
            notify_url=notify_url,
        )

    async def query(self, *, out_trade_no: str) -> GatewayTrade:
        # A precreated trade exists at Alipay only once the buyer scans: until then
        # TradeNotFound, although the QR code can still be paid.
        state = await self._client.query(out_trade_no=out_trade_no)
        return GatewayTrade(
            out_trade_no=out_trade_no,
            trade_no=state.trade_no,
            paid=state.trade_status in PAID_STATES and state.trade_no is not None,
            amount_cents=to_cents(state.total_amount),
            paid_at=state.paid_at,
        )

    async def close(self, *, out_trade_no: str) -> None:
        await self._client.close(out_trade_no=out_trade_no)

    async def refund(
        self,
        *,
        out_trade_no: str,
        trade_no: str,
        refund_no: str,
        amount_cents: int,
        total_cents: int,
    ) -> None:
        await self._client.refund(
            out_trade_no=out_trade_no, amount=to_amount(amount_cents), out_request_no=refund_no
        )

    async def refund_succeeded(self, *, out_trade_no: str, refund_no: str) -> bool:
        # `code=10000` on the refund only accepts it; the refund query says it was made.
        state = await self._client.refund_query(out_trade_no=out_trade_no, out_request_no=refund_no)
        return state.succeeded


def _read_answer(method: str, body: str, alipay_public_key: rsa.RSAPublicKey) -> _Answer:
    """The verified `*_response` node of a successful answer; any other answer raises."""
    document = _json_object(method, body)
    node_name = alipay_signing.response_node_name(method)
    node_text = alipay_signing.response_node_text(body, node_name)
    if node_text is None:
        # Alipay answers requests it cannot authenticate (bad signature, unknown app) with an
        # unsigned `error_response` instead of the method's node.
        error_text = alipay_signing.response_node_text(body, "error_response")
        if error_text is None:
            raise GatewayResponseInvalid(f"Alipay's answer to {method} has no {node_name}")
        raise _failure(_Answer(method, _json_object(method, error_text)), signed=False)
    answer = _Answer(method, _json_object(method, node_text))
    signature = document.get("sign")
    if signature is None or signature == "":
        # Alipay leaves some refusals unsigned, but a success must always be signed.
        if answer.code == SUCCESS:
            raise GatewayResponseInvalid(f"Alipay's answer to {method} is not signed")
        raise _failure(answer, signed=False)
    if not isinstance(signature, str) or not alipay_signing.verify(
        node_text, signature, alipay_public_key
    ):
        raise GatewayResponseInvalid(
            f"the signature of Alipay's answer to {method} does not verify"
        )
    if answer.code != SUCCESS:
        raise _failure(answer, signed=True)
    return answer


def _failure(answer: _Answer, *, signed: bool) -> GatewayError:
    code = answer.code or ""
    sub_code = answer.text("sub_code")
    sub_msg = answer.text("sub_msg")
    if code == SERVICE_UNAVAILABLE or sub_code in TRANSIENT_SUB_CODES:
        detail = f" ({sub_msg})" if sub_msg else ""
        return GatewayUnavailable(
            f"Alipay could not serve {answer.method} right now: {sub_code or code}{detail}"
        )
    # An unsigned refusal may have been forged on the way, so it never becomes a specific
    # answer such as TradeNotFound that callers act on.
    kind = REJECTIONS.get(sub_code or "", GatewayRejected) if signed else GatewayRejected
    return kind(code, sub_code, sub_msg, answer.method)


def _json_object(method: str, text: str) -> dict[str, object]:
    try:
        value = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise GatewayResponseInvalid(f"Alipay's answer to {method} is not JSON") from exc
    if not isinstance(value, dict):
        raise GatewayResponseInvalid(f"Alipay's answer to {method} is not a JSON object")
    return value


@dataclass(frozen=True)
class _Answer:
    """The fields of one `*_response` node, read as Alipay's string-typed values."""

    method: str
    fields: Mapping[str, object]

    @property
    def code(self) -> str | None:
        return self.text("code")

    def text(self, key: str) -> str | None:
        value = self.fields.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._invalid(f"has a {key} that is not a string")
        return value

    def required(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self._invalid(f"has no {key}")
        return value

    def amount(self, key: str) -> Decimal:
        return self._parse_amount(key, self.required(key))

    def optional_amount(self, key: str) -> Decimal | None:
        value = self.text(key)
        return None if value is None else self._parse_amount(key, value)

    def time(self, key: str) -> datetime | None:
        value = self.text(key)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise self._invalid(f"has {key} {value!r}, not a time") from exc

    def flag(self, key: str) -> bool:
        value = self.required(key)
        if value not in ("Y", "N"):
            raise self._invalid(f"has {key} {value!r}, neither Y nor N")
        return value == "Y"

    def check_echoes(self, request: Mapping[str, str]) -> None:
        # Alipay's answers carry no nonce, so a signed answer about another trade could be
        # replayed to us; the identifiers it echoes must be the ones we asked about.
        for key in ECHOED_IDS:
            echoed = self.text(key)
            if echoed is not None and key in request and echoed != request[key]:
                raise self._invalid(f"is about {key} {echoed}, not {request[key]}")

    def _parse_amount(self, key: str, value: str) -> Decimal:
        try:
            return parse_amount(value)
        except ValueError as exc:
            raise self._invalid(f"has {key} {value!r}, not an amount") from exc

    def _invalid(self, problem: str) -> GatewayResponseInvalid:
        return GatewayResponseInvalid(f"Alipay's answer to {self.method} {problem}")
