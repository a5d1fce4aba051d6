"""The codec server: Temporal's codec server protocol over the payload codec, for operators.

The Temporal Web UI posts the payloads it is about to show to `/codec/decode`, and those it is
about to send (a signal's input typed in the UI) to `/codec/encode`, as proto3 JSON
`{"payloads": [{"metadata": {name: base64}, "data": base64}]}` with the header `X-Namespace`;
the answer has the same shape, one payload for each. The CLI does the same with
`--codec-endpoint` and `--codec-auth`. Payloads that are not encrypted are decoded as they are.

It decrypts what no one else may read, so it is an operator's door. It takes:
- an admin key as `Authorization: Bearer …` (the CLI's `--codec-auth`; in production, a proxy
  in front of it that signs operators in and adds the key);
- in dev mode only, a request without credentials from this machine: its client (the socket's
  peer, or a trusted proxy's client) on loopback and the Host it names a loopback name. That is
  the dev Web UI in a browser here, which sends no credentials (`temporal server start-dev`
  offers no setting for them). Pages of other origins cannot read its answers (CORS holds for
  `/codec/` alone) and are refused outright when their browser names them (Origin); a page that
  gets the browser to call a name of its own resolving to this machine (DNS rebinding) still
  names that name as Host, and is refused.
The keys are this deployment's, so a request for another namespace (`X-Namespace`) is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, WithJsonSchema
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from api.deps import AppState, State, authenticated_admin
from api.problems import ApiProblem
from api.schemas import Problem
from api.sources import client_address
from core.codec import CodecError

router = APIRouter(prefix="/codec", tags=["codec"])
# Temporal refuses payloads over 2 MB; base64 makes one of those about 2.7 MB.
MAX_BODY_BYTES = 4 * 1024 * 1024
# What the Web UI sends: JSON, its namespace, and, when told to pass its access token, that.
UI_HEADERS = ["Authorization", "Authorization-Extras", "Content-Type", "X-Namespace"]
ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "The body is not UTF-8 JSON"},
    401: {"model": Problem, "description": "Missing or wrong admin key"},
    403: {"model": Problem, "description": "A page of an origin not allowed, or not our namespace"},
    413: {"model": Problem, "description": "Body too large: refused unread"},
    422: {"model": Problem, "description": "Not payloads in proto3 JSON, or not decryptable"},
}


def _from_base64(value: object) -> bytes:
    if isinstance(value, bytes):  # made here, not read from JSON
        return value
    if not isinstance(value, str):
        raise ValueError("bytes are base64 text in proto3 JSON")
    # Writers use standard base64; proto3 JSON readers take the URL-safe alphabet and no padding.
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


Base64 = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda data: base64.b64encode(data).decode(), return_type=str),
    WithJsonSchema({"type": "string", "format": "byte"}),
]


class WirePayload(BaseModel):
    """A Temporal payload in proto3 JSON: its bytes in base64."""

    metadata: dict[str, Base64] = Field(default_factory=dict)
    data: Base64 = b""


class WirePayloads(BaseModel):
    payloads: list[WirePayload]

    def to_protos(self) -> list[Payload]:
        return [Payload(metadata=p.metadata, data=p.data) for p in self.payloads]

    @classmethod
    def of(cls, payloads: Sequence[Payload]) -> WirePayloads:
        return cls(payloads=[WirePayload(metadata=dict(p.metadata), data=p.data) for p in payloads])


async def codec_operator(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_namespace: Annotated[str | None, Header(description="The payloads' namespace")] = None,
) -> str:
    """Who may use the codec: an operator's key identity, or `dev-ui` (see the module)."""
    origin = request.headers.get("origin")
    if origin is not None and origin not in state.settings.codec_cors_origin_list:
        raise ApiProblem(
            403, f"pages of {origin} may not call the codec server (PAYSAGA_CODEC_CORS_ORIGINS)"
        )
    if authorization is None and _from_this_machine_in_dev(state, request):
        operator = "dev-ui"
    else:
        operator = await authenticated_admin(request, state, authorization)
    namespace = state.settings.temporal_namespace
    if x_namespace is not None and x_namespace != namespace:
        raise ApiProblem(403, f"this codec server holds the keys of namespace {namespace!r} only")
    return operator


CodecOperator = Annotated[str, Depends(codec_operator)]


@router.post("/encode", response_model=WirePayloads, responses=ERRORS)
async def encode(body: WirePayloads, _: CodecOperator, state: State) -> WirePayloads:
    """Encrypt payloads, as our workers and API do before handing them to Temporal."""
    return WirePayloads.of(await state.codec.encode(body.to_protos()))


@router.post("/decode", response_model=WirePayloads, responses=ERRORS)
async def decode(body: WirePayloads, _: CodecOperator, state: State) -> WirePayloads:
    """Decrypt payloads; those that are not encrypted come back as they are."""
    try:
        return WirePayloads.of(await state.codec.decode(body.to_protos()))
    except CodecError as undecodable:
        raise ApiProblem(422, f"cannot decode: {undecodable}") from None


class CodecCors:
    """CORS for the codec server alone: pages of the Web UI's origins may call it."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self._app = app
        self._cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["POST"],
            allow_headers=UI_HEADERS,
            # A UI told to include credentials (for a signing-in proxy in front of this door)
            # is not shown the answer without this; we ourselves never take a cookie.
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(f"{router.prefix}/"):
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def _from_this_machine_in_dev(state: AppState, request: Request) -> bool:
    if state.settings.mode != "dev":
        return False
    client = client_address(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        state.callback_sources.trusted_proxies,
    )
    return client is not None and client.is_loopback and _names_loopback(request)


def _names_loopback(request: Request) -> bool:
    try:
        host = urlsplit("//" + request.headers.get("host", "")).hostname
        return host == "localhost" or (host is not None and ip_address(host).is_loopback)
    except ValueError:
        return False
