"""The codec server over real HTTP: Temporal's codec protocol, for operators only, and CORS for
the Web UI's pages.

The requests are shaped as the Web UI 2.54 (bundled with `temporal server start-dev`) sends
them: `POST {endpoint}/decode?preserveStorageRefs=true` with `Content-Type: application/json`
and `X-Namespace`, preflighted by the browser, and no credentials unless told to pass its
access token.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from api.app import create_app
from core.codec import ENCODING
from core.contracts import PaymentNotice
from core.settings import (
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_MERCHANT_SERIAL,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
    Settings,
)
from core.temporal import payload_codec
from core.vocabulary import Gateway
from paysaga.dev import Supervisor, ensure_dev_keys, wait_for_port
from paysaga.temporal_server import dev_server_command
from stack.ports import free_port
from tests.servers import serving

CLIENT_KEY = "psk_test_" + "0123456789abcdef" * 2
ADMIN_KEY = "pak_test_" + "fedcba9876543210" * 2
UI = "http://127.0.0.1:8233"
UI_HEADERS = {"Content-Type": "application/json", "X-Namespace": "default"}
AS_ADMIN = {**UI_HEADERS, "Authorization": f"Bearer {ADMIN_KEY}"}
DECODE = "/codec/decode?preserveStorageRefs=true"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("codec-server")
    ensure_dev_keys(home / "keys")
    return home


def dev_settings(home: Path, **settings: Any) -> Settings:
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'api.db'}",
        # Nobody listens there: the codec server needs no Temporal.
        temporal_address=f"127.0.0.1:{free_port()}",
        api_keys=CLIENT_KEY,
        admin_keys=ADMIN_KEY,
        **settings,
    )


def production_settings(home: Path, **settings: Any) -> Settings:
    keys = home / "keys"
    return Settings(
        mode="production",
        home=home,
        database_url=f"sqlite:///{home / 'production.db'}",
        temporal_address=f"127.0.0.1:{free_port()}",
        api_keys=CLIENT_KEY,
        admin_keys=ADMIN_KEY,
        codec_keys=f"dev={keys / 'codec.key'}",
        public_base_url="https://pay.example.com",
        default_gateway=Gateway.WECHATPAY,
        wechatpay_gateway_url="https://api.mch.weixin.qq.com",
        wechatpay_mchid=SANDBOX_WECHATPAY_MCHID,
        wechatpay_appid=SANDBOX_WECHATPAY_APPID,
        wechatpay_merchant_key_file=keys / "wechatpay_merchant_private.pem",
        wechatpay_merchant_serial=SANDBOX_WECHATPAY_MERCHANT_SERIAL,
        wechatpay_apiv3_key_file=keys / "wechatpay_apiv3.key",
        wechatpay_public_keys=(
            f"{SANDBOX_WECHATPAY_PUBLIC_KEY_ID}={keys / 'wechatpay_platform_public.pem'}"
        ),
        **settings,
    )


@pytest.fixture(scope="module")
async def api(home: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(create_app(dev_settings(home)), free_port()) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


def wire(payloads: list[Payload]) -> dict[str, Any]:
    """Payloads as proto3 JSON, as Temporal's HTTP API and the Web UI write them."""
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                **({"data": base64.b64encode(p.data).decode()} if p.data else {}),
            }
            for p in payloads
        ]
    }


def protos(body: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p["metadata"].items()},
            data=base64.b64decode(p.get("data", "")),
        )
        for p in body["payloads"]
    ]


def notice_payloads() -> list[Payload]:
    notice = PaymentNotice(order_id="ord_1", trade_no="4200001", amount_cents=2970, paid_at=None)
    # A value and a None: `binary/null` has no data, which proto3 JSON leaves out.
    return pydantic_data_converter.payload_converter.to_payloads([notice, None])


async def test_an_operator_encodes_what_workers_decode_and_decodes_it_back(
    api: httpx.AsyncClient, home: Path
) -> None:
    plain = notice_payloads()
    encoded = await api.post("/codec/encode", json=wire(plain), headers=AS_ADMIN)
    assert encoded.status_code == 200, encoded.text
    sealed = protos(encoded.json())
    assert [p.metadata["encoding"] for p in sealed] == [ENCODING, ENCODING]
    assert [p.metadata["encryption-key-id"] for p in sealed] == [b"dev", b"dev"]
    assert b"4200001" not in b"".join(p.data for p in sealed)
    # What the codec server encodes, our workers read: one key, the home's.
    assert await payload_codec(dev_settings(home)).decode(sealed) == plain

    decoded = await api.post(DECODE, json=encoded.json(), headers=AS_ADMIN)
    assert decoded.status_code == 200, decoded.text
    assert protos(decoded.json()) == plain
    # Not encrypted (written before the codec): back as it came, beside an encrypted one.
    mixed = await api.post(DECODE, json=wire([plain[0], sealed[1]]), headers=AS_ADMIN)
    assert protos(mixed.json()) == plain
    # proto3 JSON readers take URL-safe base64 without padding too.
    loose = {
        "payloads": [
            {
                "metadata": {
                    k: v.replace("+", "-").replace("/", "_").rstrip("=")
                    for k, v in p["metadata"].items()
                },
                "data": p["data"].replace("+", "-").replace("/", "_").rstrip("="),
            }
            for p in encoded.json()["payloads"][:1]
        ]
    }
    assert protos((await api.post(DECODE, json=loose, headers=AS_ADMIN)).json()) == plain[:1]


async def test_what_cannot_be_decoded_is_refused_and_said(api: httpx.AsyncClient) -> None:
    (sealed,) = protos(
        (await api.post("/codec/encode", json=wire(notice_payloads()[:1]), headers=AS_ADMIN)).json()
    )
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    altered = await api.post(DECODE, json=wire([sealed]), headers=AS_ADMIN)
    assert altered.status_code == 422 and "fails its authentication" in altered.json()["detail"]
    sealed.metadata["encryption-key-id"] = b"k1999"
    unknown = await api.post(DECODE, json=wire([sealed]), headers=AS_ADMIN)
    assert unknown.status_code == 422 and "'k1999'" in unknown.json()["detail"]
    garbled = {"payloads": [{"metadata": {"encoding": "not base64!"}, "data": "AA=="}]}
    refused = await api.post(DECODE, json=garbled, headers=AS_ADMIN)
    assert refused.status_code == 422 and "base64" in refused.json()["detail"]
    huge = {"payloads": [{"metadata": {}, "data": "A" * (5 * 1024 * 1024)}]}
    assert (await api.post(DECODE, json=huge, headers=AS_ADMIN)).status_code == 413


async def test_only_an_admin_key_opens_it(api: httpx.AsyncClient, home: Path) -> None:
    body = wire(notice_payloads())
    as_client = await api.post(
        DECODE, json=body, headers={**UI_HEADERS, "Authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert as_client.status_code == 401
    assert "client's API key" in as_client.json()["detail"]
    wrong = await api.post(
        DECODE, json=body, headers={**UI_HEADERS, "Authorization": f"Bearer {ADMIN_KEY}x"}
    )
    assert wrong.status_code == 401 and "wrong admin key" in wrong.json()["detail"]
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    # Nor is an admin key a client's.
    orders = await api.get("/v1/orders/ord_1", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert orders.status_code == 401

    # No key: refused in production, from this machine as from anywhere.
    async with (
        serving(create_app(production_settings(home)), free_port()) as url,
        httpx.AsyncClient(base_url=url) as production,
    ):
        keyless = await production.post(DECODE, json=body, headers=UI_HEADERS)
        assert keyless.status_code == 401 and "admin key" in keyless.json()["detail"]
        assert (await production.post(DECODE, json=body, headers=AS_ADMIN)).status_code == 200


async def test_in_dev_the_ui_on_this_machine_needs_no_key(
    api: httpx.AsyncClient, home: Path
) -> None:
    body = wire(await payload_codec(dev_settings(home)).encode(notice_payloads()))
    as_the_ui = {**UI_HEADERS, "Origin": UI}
    decoded = await api.post(DECODE, json=body, headers=as_the_ui)
    assert decoded.status_code == 200, decoded.text
    assert protos(decoded.json()) == notice_payloads()
    assert decoded.headers["Access-Control-Allow-Origin"] == UI
    assert (await api.post("/codec/encode", json=body, headers=UI_HEADERS)).status_code == 200

    # A page elsewhere, even on this machine, is not the UI.
    elsewhere = await api.post(DECODE, json=body, headers={**UI_HEADERS, "Origin": "http://x.test"})
    assert (
        elsewhere.status_code == 403 and "PAYSAGA_CODEC_CORS_ORIGINS" in elsewhere.json()["detail"]
    )
    # A name of a stranger's that resolves here (DNS rebinding) is not this machine's.
    rebound = await api.post(DECODE, json=body, headers={**as_the_ui, "Host": "codec.x.test"})
    assert rebound.status_code == 401
    # Keys are this deployment's: another namespace's payloads are not ours to open.
    foreign = await api.post(DECODE, json=body, headers={**as_the_ui, "X-Namespace": "billing"})
    assert foreign.status_code == 403 and "'default'" in foreign.json()["detail"]

    # Behind a proxy we trust, the client is whom it names: not this machine, so a key it is.
    async with (
        serving(create_app(dev_settings(home, trusted_proxies="127.0.0.1/32")), free_port()) as url,
        httpx.AsyncClient(base_url=url) as proxied,
    ):
        forwarded = {**UI_HEADERS, "X-Forwarded-For": "203.0.113.7"}
        assert (await proxied.post(DECODE, json=body, headers=forwarded)).status_code == 401
        assert (await proxied.post(DECODE, json=body, headers=UI_HEADERS)).status_code == 200


async def preflight(http: httpx.AsyncClient, path: str, origin: str) -> httpx.Response:
    """What a browser asks before the UI's POST: its headers are not CORS-safelisted."""
    return await http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
    )


async def test_the_browser_lets_only_the_ui_call_it(api: httpx.AsyncClient, home: Path) -> None:
    for origin in (UI, "http://localhost:8233"):
        allowed = await preflight(api, DECODE, origin)
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        allowed_headers = allowed.headers["Access-Control-Allow-Headers"].lower()
        assert {"content-type", "x-namespace", "authorization"} <= {
            name.strip() for name in allowed_headers.split(",")
        }
    for path, origin in ((DECODE, "http://x.test"), ("/v1/orders", UI)):
        refused = await preflight(api, path, origin)
        assert refused.status_code in (400, 405)
        assert "Access-Control-Allow-Origin" not in refused.headers

    # Production lets in the origins it is given, and no other.
    ui = "https://temporal-ui.example.com"
    production = production_settings(home, codec_cors_origins=ui)
    async with (
        serving(create_app(production), free_port()) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await preflight(http, DECODE, ui)).headers["Access-Control-Allow-Origin"] == ui
        assert "Access-Control-Allow-Origin" not in (await preflight(http, DECODE, UI)).headers


async def test_the_dev_ui_calls_the_codec_server_without_credentials(tmp_path: Path) -> None:
    """As `paysaga dev` starts it: the Web UI is told where the codec server is, and is given
    no way to send it a key or a cookie, hence the dev mode's rule for this machine."""
    ui_port, endpoint = free_port(), "http://127.0.0.1:8000/codec"
    command = dev_server_command(
        port=free_port(), ui_port=ui_port, db_file=None, codec_endpoint=endpoint
    )
    supervisor = Supervisor(env=dict(os.environ), log_dir=tmp_path)
    supervisor.start("temporal", command)
    try:
        await asyncio.to_thread(
            wait_for_port, "127.0.0.1", ui_port, supervisor=supervisor, name="the Temporal UI"
        )
        async with httpx.AsyncClient(timeout=30) as http:
            shown = (await http.get(f"http://127.0.0.1:{ui_port}/api/v1/settings")).json()
    finally:
        supervisor.stop()
    assert shown["Codec"]["Endpoint"] == endpoint
    assert shown["Codec"]["PassAccessToken"] is False
    assert shown["Codec"]["IncludeCredentials"] is False
