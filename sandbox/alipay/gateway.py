"""`POST /gateway.do`: the server side of Alipay's OpenAPI wire protocol.

A call is checked the way Alipay checks it — method, app, charset, signature — before any
fault fires or any trade is touched, and every answer is signed with the sandbox's key.
"""

from __future__ import annotations

import json
from decimal import Decimal

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from sandbox.alipay.methods import METHODS, Handler
from sandbox.alipay.openapi import (
    INVALID_PARAMETER,
    GatewayError,
    Node,
    business_failed,
    invalid_argument,
    missing_argument,
    service_unavailable,
    signed_body,
)
from sandbox.alipay.trades import TradeRefused
from sandbox.alipay.wire import REQUEST_UNSIGNED, answer_node, signed_content
from sandbox.china_time import parse_wall_time
from sandbox.signatures import verify
from sandbox.state import Sandbox, SandboxDep

router = APIRouter()

# Alipay's gateway labels its JSON answers text/html in the request's charset: a client that
# trusts the content type breaks against the real thing.
CONTENT_TYPE = "text/html;charset=utf-8"
REQUIRED = (
    ("app_id", "isv.missing-app-id"),
    ("sign_type", "isv.missing-signature-type"),
    ("sign", "isv.missing-signature"),
    ("timestamp", "isv.missing-timestamp"),
    ("version", "isv.missing-version"),
)


# Alipay's gateway takes a call as a form POST or as a GET with every parameter in the query
# string (the way python-alipay-sdk sends them all).
@router.api_route("/gateway.do", methods=["GET", "POST"])
async def gateway(request: Request, sandbox: SandboxDep) -> Response:
    params = await _parameters(request)
    method = params.get("method", "")
    handler = METHODS.get(method)
    # Alipay answers in the method's own node, or in error_response when it has no method.
    node_name = "error_response" if handler is None else answer_node(method)
    try:
        if handler is None:
            raise _unknown_method(method)
        _authenticate(params, sandbox)
        failure = sandbox.faults.take_method_failure(method)
        if failure == "http_503":
            return Response("Service Unavailable", status_code=503, media_type="text/plain")
        if failure == "system_error":
            raise service_unavailable()
        if failure == "refused":
            raise business_failed("ACQ.ACCESS_FORBIDDEN", "无权限使用接口")
        node = await _call(handler, sandbox, params)
        if failure == "applied_then_system_error":
            raise service_unavailable()
    except GatewayError as error:
        node = error.node
    return Response(
        signed_body(node_name, node, sandbox.alipay.private_key), media_type=CONTENT_TYPE
    )


async def _parameters(request: Request) -> dict[str, str]:
    # Alipay's SDKs put the common parameters in the query string and biz_content in the
    # form body; the gateway reads both.
    params = dict(request.query_params)
    async with request.form() as form:
        params.update((key, value) for key, value in form.items() if isinstance(value, str))
    return params


def _unknown_method(method: str) -> GatewayError:
    if not method:
        return missing_argument("isv.missing-method", "缺少方法名参数")
    return invalid_argument("isv.invalid-method", f"不存在的方法名: {method}")


def _authenticate(params: dict[str, str], sandbox: Sandbox) -> None:
    for name, sub_code in REQUIRED:
        if not params.get(name):
            raise missing_argument(sub_code, f"缺少参数 {name}")
    if params["app_id"] != sandbox.settings.app_id:
        raise invalid_argument("isv.invalid-app-id", "无效的AppID参数")
    if params.get("charset", "").lower() != "utf-8":
        raise invalid_argument("isv.invalid-charset", "the sandbox takes charset=utf-8 only")
    if params.get("format", "JSON").upper() != "JSON":
        raise invalid_argument("isv.invalid-format", "无效的数据格式")
    if params["sign_type"] != "RSA2":
        raise invalid_argument("isv.invalid-signature-type", "the sandbox takes RSA2 only")
    try:
        parse_wall_time(params["timestamp"])
    except ValueError:
        raise invalid_argument("isv.invalid-timestamp", "非法的时间戳参数") from None
    key = sandbox.alipay.app_key.get()
    if key is None:
        raise missing_argument(
            "isv.missing-signature-config", "应用未配置对应签名算法的公钥或者证书"
        )
    message = signed_content(params, unsigned=REQUEST_UNSIGNED)
    if not verify(message.encode("utf-8"), params["sign"], key):
        raise invalid_argument(
            "isv.invalid-signature",
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，"
            f"网关生成的验签字符串为：{message}",
        )


async def _call(handler: Handler, sandbox: Sandbox, params: dict[str, str]) -> Node:
    try:
        # Decimal, not float: a JSON number amount must keep its exact cents.
        biz = json.loads(params.get("biz_content", ""), parse_float=Decimal)
    except json.JSONDecodeError:
        raise business_failed(INVALID_PARAMETER, "biz_content is not JSON") from None
    if not isinstance(biz, dict):
        raise business_failed(INVALID_PARAMETER, "biz_content is not a JSON object")
    try:
        return await handler(sandbox, biz, params.get("notify_url") or None)
    except ValidationError as error:
        raise business_failed(INVALID_PARAMETER, _summary(error)) from None
    except TradeRefused as refusal:
        raise business_failed(refusal.code, refusal.message) from None


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, detail['loc'])) or 'biz_content'}: {detail['msg']}"
        for detail in error.errors()
    )
