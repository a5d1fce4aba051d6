"""WeChat Pay APIv3 client for Native (QR code) payments: order, query, close, refund.

Each call is JSON over HTTPS, its exact bytes signed with the merchant's API key
(WECHATPAY2-SHA256-RSA2048). Each answer is believed only once WeChat Pay's signature over its
exact bytes verifies with a key we hold, and only if what it echoes is what we asked about.
`WechatPayClient` is WeChat Pay behind paysaga's gateway seam (`gateways.gateway`): WeChat Pay
counts in fen, which are paysaga's cents.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from gateways import wechatpay_signing
from gateways.alipay_formats import CHINA_TIME
from gateways.errors import (
    GatewayError,
    GatewayRejected,
    GatewayResponseInvalid,
    GatewayUnavailable,
    TradeAlreadyPaid,
    TradeNotFound,
    TradeStatusError,
)
from gateways.gateway import GatewayTrade

USER_AGENT = "paysaga/0.1 (WeChat Pay APIv3; httpx)"
CURRENCY = "CNY"
# Native order `description` is at most 127 long.
DESCRIPTION_MAX = 127
# Paid trades. REFUND: the trade was paid, then a refund of it began; the money was captured.
PAID_STATES = frozenset({"SUCCESS", "REFUND"})
# Refunds that will not pay out unless someone acts. CLOSED: WeChat Pay closed it unpaid (it sat
# in PROCESSING for 7 days, the merchant's balance short); a new refund number is needed.
# ABNORMAL: the buyer's bank card refused the money back; the merchant must resend it by hand.
FAILED_REFUND_STATES = {
    "CLOSED": "the refund was closed without paying out",
    "ABNORMAL": "the refund could not be paid back to the buyer; it must be handled by hand",
}
# WeChat Pay's own words for "try again later", whatever the HTTP status they come with.
TRANSIENT_CODES = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED"})
REJECTIONS: dict[str, type[GatewayRejected]] = {
    "ORDER_NOT_EXIST": TradeNotFound,
    # The refund APIs' word for an unknown order or refund number.
    "RESOURCE_NOT_EXISTS": TradeNotFound,
    "ORDERPAID": TradeAlreadyPaid,
    # WeChat Pay's close docs name an order already closed both ORDERCLOSED and ORDER_CLOSED.
    "ORDERCLOSED": TradeStatusError,
    "ORDER_CLOSED": TradeStatusError,
}
# No trade comes near ten billion yuan; the cap keeps an absurd number out of paysaga's columns.
MAX_FEN = 10**12
MAX_DIGITS = 40
# RFC 3339 as WeChat Pay writes times, e.g. 2018-06-08T10:34:56+08:00, always with an offset.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True)
class WechatPayConfig:
    # The API's base URL, e.g. https://api.mch.weixin.qq.com
    gateway_url: str
    mchid: str
    appid: str
    merchant_private_key: rsa.RSAPrivateKey
    # The serial number of the merchant's API certificate, naming `merchant_private_key`.
    merchant_serial: str
    apiv3_key: bytes
    # WeChat Pay's keys by the id its signatures name in `Wechatpay-Serial`.
    wechatpay_public_keys: Mapping[str, rsa.RSAPublicKey]
    notify_url: str


class WechatPayClient:
    """WeChat Pay as paysaga's `PaymentGateway`."""

    def __init__(self, config: WechatPayConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    async def create_qr_payment(
        self,
        *,
        out_trade_no: str,
        amount_cents: int,
        subject: str,
        expires_at: datetime,
        notify_url: str | None = None,
    ) -> str:
        """The `code_url` to show as a QR code.

        WeChat Pay takes the same order again only with the same parameters (a changed
        `time_expire` or `notify_url` is refused); paysaga's retries send the same, all drawn
        from the order.
        """
        answer = await self._call(
            "wechatpay.native",
            "POST",
            "/v3/pay/transactions/native",
            payload={
                "appid": self._config.appid,
                "mchid": self._config.mchid,
                "description": subject[:DESCRIPTION_MAX],
                "out_trade_no": out_trade_no,
                "time_expire": format_time(expires_at),
                "notify_url": notify_url or self._config.notify_url,
                "amount": {"total": amount_cents, "currency": CURRENCY},
            },
        )
        return answer.required_text("code_url")

    async def query(self, *, out_trade_no: str) -> GatewayTrade:
        answer = await self._call(
            "wechatpay.query",
            "GET",
            f"/v3/pay/transactions/out-trade-no/{_segment(out_trade_no)}",
            query={"mchid": self._config.mchid},
        )
        answer.check_echo("out_trade_no", out_trade_no, required=True)
        answer.check_echo("mchid", self._config.mchid)
        answer.check_echo("appid", self._config.appid)
        paid = answer.required_text("trade_state") in PAID_STATES
        trade_no = answer.text("transaction_id")
        if paid and trade_no is None:
            raise answer.invalid("the trade is paid but has no transaction_id")
        amount = answer.amount(required=paid)
        return GatewayTrade(
            out_trade_no=out_trade_no,
            trade_no=trade_no,
            paid=paid,
            # An unpaid trade's amount is never acted on.
            amount_cents=0 if amount is None else amount,
            paid_at=answer.time("success_time") if paid else None,
        )

    async def close(self, *, out_trade_no: str) -> None:
        # Answered 204 with no body; an order already paid or closed is refused.
        await self._call(
            "wechatpay.close",
            "POST",
            f"/v3/pay/transactions/out-trade-no/{_segment(out_trade_no)}/close",
            payload={"mchid": self._config.mchid},
        )

    async def refund(
        self,
        *,
        out_trade_no: str,
        trade_no: str,
        refund_no: str,
        amount_cents: int,
        total_cents: int,
    ) -> None:
        """WeChat Pay refunds once per `out_refund_no`: a retry with it is the same refund."""
        answer = await self._call(
            "wechatpay.refund",
            "POST",
            "/v3/refund/domestic/refunds",
            payload={
                "transaction_id": trade_no,
                "out_refund_no": refund_no,
                "amount": {"refund": amount_cents, "total": total_cents, "currency": CURRENCY},
            },
        )
        answer.check_echo("out_refund_no", refund_no, required=True)
        answer.check_echo("transaction_id", trade_no)
        answer.check_echo("out_trade_no", out_trade_no)
        answer.check_refund_amount(amount_cents)
        # PROCESSING and SUCCESS both mean accepted; refund_succeeded says when it is done.
        answer.refund_status()

    async def refund_succeeded(self, *, out_trade_no: str, refund_no: str) -> bool:
        """Raises TradeNotFound when WeChat Pay never received the refund: asking again
        cannot make it succeed, so an operator decides (refunding again with the same number
        is safe)."""
        answer = await self._call(
            "wechatpay.refund_query",
            "GET",
            f"/v3/refund/domestic/refunds/{_segment(refund_no)}",
        )
        answer.check_echo("out_refund_no", refund_no, required=True)
        answer.check_echo("out_trade_no", out_trade_no)
        return answer.refund_status() == "SUCCESS"

    async def _call(
        self,
        name: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        payload: Mapping[str, object] | None = None,
    ) -> _Answer:
        # Serialised once: the signature covers exactly the bytes that are sent.
        body = (
            b""
            if payload is None
            else json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        )
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        request = self._http.build_request(
            method,
            self._config.gateway_url.rstrip("/") + path,
            params=query,
            content=body or None,
            headers=headers,
        )
        # WeChat Pay signs the URL as it arrives: the path and query the request really has.
        request.headers["Authorization"] = wechatpay_signing.authorization(
            mchid=self._config.mchid,
            serial_no=self._config.merchant_serial,
            private_key=self._config.merchant_private_key,
            method=method,
            url=request.url.raw_path.decode("ascii"),
            body=body,
            timestamp=int(time.time()),
            nonce=wechatpay_signing.new_nonce(),
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(
                f"WeChat Pay did not answer {name}: {type(exc).__name__} {exc}"
            ) from exc
        return _read_answer(name, response, self._config.wechatpay_public_keys)


def _read_answer(
    name: str, response: httpx.Response, public_keys: Mapping[str, rsa.RSAPublicKey]
) -> _Answer:
    """The verified answer of a successful call; any other answer raises."""
    body = response.content
    try:
        wechatpay_signing.check_signature(
            response.headers, body, public_keys=public_keys, now=datetime.now(UTC)
        )
    except ValueError as problem:
        unverified: str | None = str(problem)
    else:
        unverified = None
    status = response.status_code
    if 200 <= status < 300:
        # WeChat Pay signs every answer to a request it authenticated: a success without a
        # good signature is forged or tampered with.
        if unverified is not None:
            raise GatewayResponseInvalid(f"WeChat Pay's answer to {name}: {unverified}")
        return _Answer(name, {} if status == 204 or not body else _json_object(name, body))
    if status < 400:
        raise GatewayResponseInvalid(f"WeChat Pay answered {name} with HTTP {status}")
    raise _failure(name, status, body, signed=unverified is None)


def _failure(name: str, status: int, body: bytes, *, signed: bool) -> GatewayError:
    code, message = _error_words(body)
    if status >= 500 or status == 429 or code in TRANSIENT_CODES:
        said = f" {code}" if code else ""
        return GatewayUnavailable(
            f"WeChat Pay could not serve {name} right now: HTTP {status}{said}"
            + (f" ({message})" if message else "")
        )
    # A refusal whose signature does not verify may have been forged on the way, so it never
    # becomes a specific answer such as TradeNotFound that callers act on.
    kind = REJECTIONS.get(code or "", GatewayRejected) if signed else GatewayRejected
    return kind(str(status), code, message, name)


def _error_words(body: bytes) -> tuple[str | None, str | None]:
    """The `code` and `message` of an error answer, as far as it has them."""
    try:
        fields = parse_json(body)
    except ValueError:
        return None, None
    if not isinstance(fields, dict):
        return None, None
    code, message = fields.get("code"), fields.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else None,
    )


def parse_json(data: bytes) -> object:
    """A JSON document as WeChat Pay writes one; ValueError for anything else.

    Refused: bytes that are not UTF-8 JSON, a repeated key (which value would count?), NaN and
    Infinity, integers of more than MAX_DIGITS digits, and nesting deep enough to exhaust the
    parser.
    """
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_integer,
        )
    except RecursionError as deep:
        raise ValueError("JSON nested too deeply") from deep
    except UnicodeDecodeError as undecodable:
        raise ValueError("not UTF-8") from undecodable
    except ValueError as malformed:
        raise ValueError(f"not JSON: {malformed}") from malformed


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("a key is repeated")
    return fields


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _integer(digits: str) -> int:
    # Reading a very long number costs time that grows with its square; none of WeChat Pay's
    # numbers comes near this length.
    if len(digits) > MAX_DIGITS:
        raise ValueError("a number has too many digits")
    return int(digits)


def format_time(moment: datetime) -> str:
    """RFC 3339 in China time, e.g. 2024-01-02T08:30:00+08:00, as WeChat Pay writes times."""
    if moment.tzinfo is None:
        raise ValueError("WeChat Pay times need a timezone-aware datetime, got a naive one")
    return moment.astimezone(CHINA_TIME).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with its offset, as tz-aware UTC; ValueError for anything else."""
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except OverflowError as exc:
        # An offset can carry a time at the edge of the calendar past datetime's range.
        raise ValueError(f"{text!r} is out of range") from exc


def read_fen(
    fields: Mapping[str, object], key: str, *, required: bool, where: str = ""
) -> int | None:
    """`amount.<key>` of an answer or a resource: a positive whole number of fen, in CNY.

    ValueError, saying why, if it is missing though `required`, or anything else (a float, a
    bool, text, another currency); `where` names the fields in that reason.
    """
    amount = fields.get("amount")
    if amount is None:
        if required:
            raise ValueError(f"missing field {where}amount")
        return None
    if not isinstance(amount, dict):
        raise ValueError(f"{where}amount is not a JSON object")
    currency = amount.get("currency")
    if currency is not None and currency != CURRENCY:
        raise ValueError(f"{where}amount is not in {CURRENCY}")
    value = amount.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field {where}amount.{key}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_FEN:
        raise ValueError(f"{where}amount.{key} is not an amount in fen")
    return value


def _segment(value: str) -> str:
    # An identifier in the path is one segment whatever it holds: never a way into another path.
    return quote(value, safe="")


def _json_object(name: str, body: bytes) -> dict[str, object]:
    try:
        value = parse_json(body)
    except ValueError as exc:
        raise GatewayResponseInvalid(f"WeChat Pay's answer to {name}: body is {exc}") from exc
    if not isinstance(value, dict):
        raise GatewayResponseInvalid(f"WeChat Pay's answer to {name}: body is not a JSON object")
    return value


@dataclass(frozen=True)
class _Answer:
    """The fields of one verified answer."""

    name: str
    fields: Mapping[str, object]

    def text(self, key: str) -> str | None:
        value = self.fields.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.invalid(f"field {key} is not a string")
        return value

    def required_text(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise self.invalid(f"missing field {key}")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.text(key)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise self.invalid(f"field {key} is not an RFC 3339 time") from exc

    def amount(self, *, required: bool) -> int | None:
        """The trade's total in fen (`amount.total`), which must be in CNY."""
        return self._fen("total", required=required)

    def check_refund_amount(self, asked: int) -> None:
        refunded = self._fen("refund", required=False)
        if refunded is not None and refunded != asked:
            raise self.invalid(f"it is about a refund of {refunded} fen, not {asked}")

    def refund_status(self) -> str:
        """PROCESSING or SUCCESS; a refund that failed for good raises GatewayRejected."""
        status = self.required_text("status")
        if status in FAILED_REFUND_STATES:
            raise GatewayRejected("200", status, FAILED_REFUND_STATES[status], self.name)
        if status not in ("PROCESSING", "SUCCESS"):
            raise self.invalid(f"refund status {status!r} is unknown")
        return status

    def check_echo(self, key: str, asked: str, *, required: bool = False) -> None:
        # A signed answer about another trade or merchant could be replayed to us: the
        # identifiers it echoes must be the ones we asked about.
        echoed = self.text(key)
        if echoed is None and required:
            raise self.invalid(f"missing field {key}")
        if echoed is not None and echoed != asked:
            raise self.invalid(f"it is about {key} {echoed}, not {asked}")

    def invalid(self, problem: str) -> GatewayResponseInvalid:
        return GatewayResponseInvalid(f"WeChat Pay's answer to {self.name}: {problem}")

    def _fen(self, key: str, *, required: bool) -> int | None:
        try:
            return read_fen(self.fields, key, required=required)
        except ValueError as exc:
            raise self.invalid(str(exc)) from exc
