"""WeChat Pay APIv3 for Native payments, server side: place an order, query it, close it,
refund it, query a refund.

A call is checked the way WeChat Pay checks it — the merchant, key serial, timestamp and
signature of its `Authorization` header, over the request's raw path, query and body — before
any fault fires or any order is touched. Every answer, errors and the empty 204 included, is
signed with the sandbox's WeChat Pay key and names it by its public key id. Errors are
`{"code", "message"}` with the HTTP status WeChat Pay gives them.

The sandbox takes http notify_urls, where WeChat Pay insists on https (merchants run the sandbox
on their own machine), and any time_expire, one already past included (so that tests can make
expired codes).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from sandbox.china_time import parse_rfc3339
from sandbox.signatures import verify
from sandbox.state import Sandbox, SandboxDep
from sandbox.wechatpay import resources
from sandbox.wechatpay.signing import MAX_SKEW_SECONDS, parse_authorization, signature_headers
from sandbox.wechatpay.transactions import ApiError, param_error

router = APIRouter(prefix="/v3")

# What an operation answers: the HTTP status and the JSON body, None for an empty 204.
Answer = tuple[int, resources.Json | None]
Model = TypeVar("Model", bound=BaseModel)


def _rfc3339(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string")
    return parse_rfc3339(value)


def _notify_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL")
    if "?" in value:
        raise ValueError("must carry no query parameters")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]
NotifyUrl = Annotated[str, BeforeValidator(_notify_url), Field(max_length=255)]
# Integers only, as JSON numbers: WeChat Pay counts money in whole fen.
Fen = Annotated[int, Field(strict=True, ge=1)]


class _Body(BaseModel):
    # WeChat Pay takes fields the sandbox has no use for (detail, scene_info, goods_tag, …).
    model_config = ConfigDict(extra="ignore", frozen=True)


class OrderAmount(_Body):
    total: Fen
    currency: Literal["CNY"] = "CNY"


class NativeOrder(_Body):
    appid: str = Field(min_length=1, max_length=32)
    mchid: str = Field(min_length=1, max_length=32)
    description: str = Field(min_length=1, max_length=127)
    out_trade_no: str = Field(pattern=r"^[A-Za-z0-9_|*-]{6,32}$")
    time_expire: Rfc3339 | None = None
    attach: str | None = Field(default=None, max_length=128)
    notify_url: NotifyUrl
    amount: OrderAmount


class CloseOrder(_Body):
    mchid: str = Field(min_length=1, max_length=32)


class RefundAmount(_Body):
    refund: Fen
    total: Fen
    currency: Literal["CNY"]


class RefundRequest(_Body):
    transaction_id: str | None = Field(default=None, max_length=32)
    out_trade_no: str | None = Field(default=None, max_length=32)
    out_refund_no: str = Field(pattern=r"^[A-Za-z0-9_|*@-]{1,64}$")
    notify_url: NotifyUrl | None = None
    amount: RefundAmount

    @model_validator(mode="after")
    def _names_an_order(self) -> Self:
        if not (self.transaction_id or self.out_trade_no):
            raise ValueError("transaction_id and out_trade_no cannot both be empty")
        return self


@router.post("/pay/transactions/native")
async def native(request: Request, sandbox: SandboxDep) -> Response:
    async def place(body: bytes) -> Answer:
        order = _parsed(NativeOrder, body)
        _check_merchant(sandbox, order.mchid, appid=order.appid)
        placed = await sandbox.wechatpay.book.place(
            appid=order.appid,
            mchid=order.mchid,
            out_trade_no=order.out_trade_no,
            description=order.description,
            total=order.amount.total,
            notify_url=order.notify_url,
            expires_at=order.time_expire,
        )
        return 200, {"code_url": sandbox.wechatpay.code_url(placed)}

    return await _serve(request, sandbox, "wechatpay.native", place)


@router.get("/pay/transactions/out-trade-no/{out_trade_no}")
async def query(out_trade_no: str, request: Request, sandbox: SandboxDep) -> Response:
    async def find(_: bytes) -> Answer:
        _check_merchant(sandbox, request.query_params.get("mchid", ""))
        return 200, resources.transaction(await sandbox.wechatpay.book.query(out_trade_no))

    return await _serve(request, sandbox, "wechatpay.query", find)


@router.post("/pay/transactions/out-trade-no/{out_trade_no}/close")
async def close(out_trade_no: str, request: Request, sandbox: SandboxDep) -> Response:
    async def shut(body: bytes) -> Answer:
        _check_merchant(sandbox, _parsed(CloseOrder, body).mchid)
        await sandbox.wechatpay.book.close(
            out_trade_no, buyer_pays_first=sandbox.faults.current.pay_before_close
        )
        return 204, None

    return await _serve(request, sandbox, "wechatpay.close", shut)


@router.post("/refund/domestic/refunds")
async def refund(request: Request, sandbox: SandboxDep) -> Response:
    async def give_back(body: bytes) -> Answer:
        asked = _parsed(RefundRequest, body)
        order, accepted = await sandbox.wechatpay.refund(
            transaction_id=asked.transaction_id,
            out_trade_no=asked.out_trade_no,
            out_refund_no=asked.out_refund_no,
            amount=asked.amount.refund,
            total=asked.amount.total,
            notify_url=asked.notify_url,
        )
        return 200, resources.refund(order, accepted)

    return await _serve(request, sandbox, "wechatpay.refund", give_back)


@router.get("/refund/domestic/refunds/{out_refund_no}")
async def refund_query(out_refund_no: str, request: Request, sandbox: SandboxDep) -> Response:
    async def find(_: bytes) -> Answer:
        return 200, resources.refund(*await sandbox.wechatpay.book.refund_query(out_refund_no))

    return await _serve(request, sandbox, "wechatpay.refund_query", find)


async def _serve(
    request: Request,
    sandbox: Sandbox,
    method: str,
    operation: Callable[[bytes], Awaitable[Answer]],
) -> Response:
    body = await request.body()
    try:
        _authenticate(request, body, sandbox)
        failure = sandbox.faults.take_method_failure(method)
        if failure == "http_503":
            # No WeChat Pay answer at all, so nothing signed either.
            return Response("Service Unavailable", status_code=503, media_type="text/plain")
        if failure == "system_error":
            raise _system_error()
        if failure == "refused":
            raise ApiError(403, "NO_AUTH", "商户无权限")
        answer = await operation(body)
        if failure == "applied_then_system_error":
            raise _system_error()
    except ApiError as error:
        answer = error.status, {"code": error.code, "message": error.message}
    return _signed(sandbox, *answer)


def _authenticate(request: Request, body: bytes, sandbox: Sandbox) -> None:
    settings = sandbox.settings
    header = request.headers.get("Authorization")
    if header is None:
        raise _sign_error("请求未携带Authorization")
    try:
        credentials = parse_authorization(header)
    except ValueError as malformed:
        raise _sign_error(str(malformed)) from None
    if credentials.mchid != settings.wechatpay_mchid:
        raise _sign_error(f"商户号 {credentials.mchid} 不是沙箱的商户")
    if abs(sandbox.clock().timestamp() - credentials.timestamp) >= MAX_SKEW_SECONDS:
        raise _sign_error("请求时间戳与当前时间相差5分钟或更多")
    if credentials.serial_no != settings.wechatpay_merchant_serial:
        raise _sign_error(f"商户证书序列号 {credentials.serial_no} 不是商户的")
    key = sandbox.wechatpay.merchant_key.get()
    if key is None:
        raise _sign_error("沙箱还没有商户的公钥")
    message = credentials.message(request.method, _target(request), body)
    if not verify(message, credentials.signature, key):
        raise _sign_error("签名错误")


def _target(request: Request) -> bytes:
    """The path and query exactly as requested: what the merchant signed."""
    path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    return path + b"?" + query if query else path


def _check_merchant(sandbox: Sandbox, mchid: str, *, appid: str | None = None) -> None:
    settings = sandbox.settings
    if mchid != settings.wechatpay_mchid:
        raise ApiError(400, "MCH_NOT_EXISTS", f"商户号 {mchid!r} 不存在")
    if appid is not None and appid != settings.wechatpay_appid:
        raise ApiError(400, "APPID_MCHID_NOT_MATCH", f"appid {appid} 与商户号不匹配")


def _parsed(model: type[Model], body: bytes) -> Model:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise param_error(_summary(error)) from None


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, detail['loc'])) or 'body'}: {detail['msg']}"
        for detail in error.errors()
    )


def _sign_error(message: str) -> ApiError:
    return ApiError(401, "SIGN_ERROR", message)


def _system_error() -> ApiError:
    return ApiError(500, "SYSTEM_ERROR", "系统错误")


def _signed(sandbox: Sandbox, status: int, payload: dict[str, Any] | None) -> Response:
    body = b"" if payload is None else _json(payload)
    headers = signature_headers(
        body,
        now=sandbox.clock(),
        private_key=sandbox.wechatpay.private_key,
        key_id=sandbox.settings.wechatpay_public_key_id,
    )
    headers["Request-ID"] = secrets.token_hex(20).upper()
    media_type = None if payload is None else "application/json; charset=utf-8"
    return Response(body, status_code=status, headers=headers, media_type=media_type)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
