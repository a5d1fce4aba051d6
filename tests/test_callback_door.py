"""The API's doors, served for real over HTTP on SQLite and on PostgreSQL, without Temporal:
every refused callback on both gateways (its status, its tally, nothing changed), no 500 for
any input, bodies refused by size before they are read, callback sources, signed client
requests and each API key's budget."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from api.app import create_app
from api.callbacks import MAX_BODY_BYTES
from api.limits import CLIENT_MAX_BODY_BYTES
from api.rate_limits import RateLimits
from api.sources import client_address
from core.settings import (
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
    Settings,
    SettingsError,
)
from core.vocabulary import Gateway
from gateways import wechatpay_signing
from gateways.alipay_signing import load_private_key
from paysaga.dev import ensure_dev_keys
from stack.notifications import Callback, alipay_callback, wechatpay_callback
from stack.ports import free_port
from store.db import transaction
from store.models import CallbackAttempt, CallbackRefusal, Order, Payment, Refund
from tests.orders import claim
from tests.servers import serving

CLIENT_KEY = "psk_test_door_client_one"
SIGNING_KEY = "psk_test_door_must_sign"
ALIPAY_ORDER = "ord_door_alipay"
WECHATPAY_ORDER = "ord_door_wechatpay"
NOW = datetime.now(UTC)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Keys:
    home: Path
    alipay: rsa.RSAPrivateKey
    wechatpay: rsa.RSAPrivateKey
    apiv3: bytes
    forger: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The sandbox's keys, which dev mode's callback doors believe, and a forger's."""
    home = tmp_path_factory.mktemp("door")
    ensure_dev_keys(home / "keys")
    return Keys(
        home=home,
        alipay=load_private_key(home / "keys" / "sandbox_private.pem"),
        wechatpay=load_private_key(home / "keys" / "wechatpay_platform_private.pem"),
        apiv3=(home / "keys" / "wechatpay_apiv3.key").read_bytes().strip(),
        forger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@asynccontextmanager
async def api(engine: Engine, keys: Keys, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Our API over this database, with no Temporal to reach; a client of it."""
    app = create_app(
        Settings(
            home=keys.home,
            database_url=engine.url.render_as_string(hide_password=False),
            temporal_address=f"127.0.0.1:{free_port()}",
            api_keys=f"{CLIENT_KEY},{SIGNING_KEY}",
            signed_key_ids=key_id(SIGNING_KEY),
            **settings,
        )
    )
    port = free_port()
    async with serving(app, port) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


@pytest.fixture
def books(engine: Engine) -> Engine:
    """A pending order on each gateway."""
    for order_id, gateway in ((ALIPAY_ORDER, Gateway.ALIPAY), (WECHATPAY_ORDER, Gateway.WECHATPAY)):
        claim(engine, order_id, reservation=f"room-{order_id}", now=NOW, gateway=gateway)
    return engine


def tally(engine: Engine) -> Counter[tuple[str, str]]:
    """Refused callbacks, counted by gateway and reason."""
    with transaction(engine) as session:
        rows = session.exec(select(CallbackRefusal)).all()
        return Counter({(row.gateway, row.reason): row.count for row in rows})


def money_and_trail(engine: Engine) -> dict[str, object]:
    """Everything a callback could change: the orders, payments, refunds and audit trail."""
    with transaction(engine) as session:
        order_rows = session.exec(select(Order).order_by(col(Order.id))).all()
        return {
            "orders": [(o.id, o.status, o.flag_reason, o.updated_at) for o in order_rows],
            "payments": session.exec(select(func.count()).select_from(Payment)).one(),
            "refunds": session.exec(select(func.count()).select_from(Refund)).one(),
            "attempts": session.exec(select(func.count()).select_from(CallbackAttempt)).one(),
        }


def refusal_said(gateway: Gateway, response: httpx.Response) -> str:
    """The reason a refusal gives, in the gateway's own shape."""
    body = response.json()
    if gateway is Gateway.WECHATPAY:
        assert body["code"] == "FAIL"
        message: str = body["message"]
        return message
    detail: str = body["detail"]
    return detail


# Refusals, case by case.


def alipay(keys: Keys, **fields: str) -> Callback:
    return alipay_callback(keys.alipay, out_trade_no=ALIPAY_ORDER, **fields)


def resource(**changes: object) -> dict[str, object]:
    return {
        "appid": SANDBOX_WECHATPAY_APPID,
        "mchid": SANDBOX_WECHATPAY_MCHID,
        "out_trade_no": WECHATPAY_ORDER,
        "transaction_id": "4200000000202611230000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "success_time": "2026-11-23T20:00:00+08:00",
        "amount": {"total": 2970, "payer_total": 2970, "currency": "CNY"},
        **changes,
    }


def wechatpay(keys: Keys, **changes: object) -> Callback:
    return wechatpay_callback(
        keys.wechatpay,
        key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        apiv3_key=keys.apiv3,
        resource=resource(**changes),
    )


def wechatpay_signed(keys: Keys, body: bytes) -> Callback:
    """Any body, signed as WeChat Pay signs: a malformed one gets past the signature."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    message = wechatpay_signing.signed_message(timestamp=timestamp, nonce=nonce, body=body)
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        "Wechatpay-Signature": wechatpay_signing.sign(message, keys.wechatpay),
    }
    return Callback(headers, body)


def with_headers(callback: Callback, **headers: str) -> Callback:
    return Callback({**callback.headers, **headers}, callback.body)


@dataclass(frozen=True)
class Refusal:
    gateway: Gateway
    status: int
    # The reason the refusal is tallied under: whatever the caller chose is left out.
    tallied: str
    callback: Callable[[Keys], Callback]
    settings: dict[str, str] = field(default_factory=dict)
    # Taken once as it should be, then sent again.
    replayed: bool = False


REFUSALS = {
    "alipay bad signature": Refusal(
        Gateway.ALIPAY,
        400,
        "signature does not verify",
        lambda keys: alipay_callback(keys.forger, out_trade_no=ALIPAY_ORDER),
    ),
    "alipay RSA-SHA1": Refusal(
        Gateway.ALIPAY,
        400,
        "sign_type … is not accepted, RSA2 only",
        lambda keys: alipay(keys, sign_type="RSA"),
    ),
    "alipay unsigned": Refusal(
        Gateway.ALIPAY,
        400,
        "missing field sign_type",
        lambda keys: Callback({}, f"out_trade_no={ALIPAY_ORDER}&total_amount=29.70".encode()),
    ),
    "alipay app mismatch": Refusal(
        Gateway.ALIPAY,
        400,
        "app_id … is not ours",
        lambda keys: alipay(keys, app_id="2021009999999999"),
    ),
    "alipay unknown order": Refusal(
        Gateway.ALIPAY,
        404,
        "no order …",
        lambda keys: alipay_callback(keys.alipay, out_trade_no="ord_nobody"),
    ),
    "alipay order of the other gateway": Refusal(
        Gateway.ALIPAY,
        404,
        "order … is not paid through alipay",
        lambda keys: alipay_callback(keys.alipay, out_trade_no=WECHATPAY_ORDER),
    ),
    "alipay malformed": Refusal(
        Gateway.ALIPAY,
        400,
        "body is not a utf-8 form",
        lambda keys: Callback({}, b"%%%not a form\x00\xff\xfe"),
    ),
    "alipay oversize": Refusal(
        Gateway.ALIPAY,
        413,
        "the body is over … bytes",
        lambda keys: Callback({}, b"a" * (MAX_BODY_BYTES + 1)),
    ),
    "alipay source not allowed": Refusal(
        Gateway.ALIPAY,
        403,
        "alipay callbacks are not taken from …",
        lambda keys: alipay(keys),
        settings={"alipay_callback_sources": "203.0.113.0/24"},
    ),
    "wechatpay bad signature": Refusal(
        Gateway.WECHATPAY,
        400,
        "signature does not verify",
        lambda keys: wechatpay_callback(
            keys.forger,
            key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
            apiv3_key=keys.apiv3,
            resource=resource(),
        ),
    ),
    "wechatpay unknown key id": Refusal(
        Gateway.WECHATPAY,
        400,
        "wechatpay-serial … names no key of ours",
        lambda keys: with_headers(wechatpay(keys), **{"Wechatpay-Serial": "PUB_KEY_ID_NOT_OURS"}),
    ),
    "wechatpay stale timestamp": Refusal(
        Gateway.WECHATPAY,
        400,
        "wechatpay-timestamp … is 5 minutes or more from now",
        lambda keys: wechatpay_callback(
            keys.wechatpay,
            key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
            apiv3_key=keys.apiv3,
            resource=resource(),
            timestamp=int(time.time()) - 301,
        ),
    ),
    "wechatpay SIGNTEST probe": Refusal(
        Gateway.WECHATPAY,
        400,
        "signature is WeChat Pay's probe, which must fail",
        lambda keys: with_headers(
            wechatpay(keys), **{"Wechatpay-Signature": "WECHATPAY/SIGNTEST/" + "A" * 300}
        ),
    ),
    "wechatpay bad AES tag": Refusal(
        Gateway.WECHATPAY,
        400,
        "resource: ciphertext does not decrypt with our APIv3 key",
        lambda keys: wechatpay_callback(
            keys.wechatpay,
            key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
            apiv3_key=bytes(32),
            resource=resource(),
        ),
    ),
    "wechatpay mchid mismatch": Refusal(
        Gateway.WECHATPAY,
        400,
        "mchid … is not ours",
        lambda keys: wechatpay(keys, mchid="1900009999"),
    ),
    "wechatpay appid mismatch": Refusal(
        Gateway.WECHATPAY,
        400,
        "appid … is not ours",
        lambda keys: wechatpay(keys, appid="wx0000000000000000"),
    ),
    "wechatpay replayed nonce": Refusal(
        Gateway.WECHATPAY,
        400,
        "nonce … was seen before: a replay",
        # Not a payment, so the first is taken without a saga to hand it to.
        lambda keys: wechatpay(keys, trade_state="NOTPAY"),
        replayed=True,
    ),
    "wechatpay unknown order": Refusal(
        Gateway.WECHATPAY,
        404,
        "no order …",
        lambda keys: wechatpay(keys, out_trade_no="ord_nobody"),
    ),
    "wechatpay order of the other gateway": Refusal(
        Gateway.WECHATPAY,
        404,
        "order … is not paid through wechatpay",
        lambda keys: wechatpay(keys, out_trade_no=ALIPAY_ORDER),
    ),
    "wechatpay unsigned": Refusal(
        Gateway.WECHATPAY,
        400,
        "missing header wechatpay-timestamp",
        lambda keys: Callback({}, b"{}"),
    ),
    "wechatpay malformed": Refusal(
        Gateway.WECHATPAY,
        400,
        "body is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        lambda keys: wechatpay_signed(keys, b"{not json"),
    ),
    "wechatpay oversize": Refusal(
        Gateway.WECHATPAY,
        413,
        "the body is over … bytes",
        lambda keys: Callback({}, b"{" + b" " * MAX_BODY_BYTES + b"}"),
    ),
    "wechatpay source not allowed": Refusal(
        Gateway.WECHATPAY,
        403,
        "wechatpay callbacks are not taken from …",
        lambda keys: wechatpay(keys),
        settings={"wechatpay_callback_sources": "203.0.113.0/24, 2001:db8::/32"},
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refused_callback_is_tallied_and_changes_nothing(
    books: Engine, keys: Keys, case: Refusal
) -> None:
    callback = case.callback(keys)
    path = f"/v1/callbacks/{case.gateway}"
    async with api(books, keys, **case.settings) as http:
        if case.replayed:
            taken = await http.post(path, content=callback.body, headers=callback.headers)
            assert taken.status_code == 204, taken.text
        tallied, before = tally(books), money_and_trail(books)
        response = await http.post(path, content=callback.body, headers=callback.headers)

    assert response.status_code == case.status, response.text
    assert refusal_said(case.gateway, response).startswith("notification rejected: ")
    assert tally(books) - tallied == {(case.gateway, case.tallied): 1}
    assert money_and_trail(books) == before


async def test_a_flood_of_forgeries_costs_a_row_per_kind_not_per_forgery(
    books: Engine, keys: Keys
) -> None:
    async with api(books, keys) as http:
        for n in range(25):
            # Each forgery differs in what the caller chose: the header, the sign_type, the time.
            unknown = with_headers(wechatpay(keys), **{"Wechatpay-Serial": f"PUB_KEY_ID_{n}"})
            stale = with_headers(wechatpay(keys), **{"Wechatpay-Timestamp": str(10**9 + n)})
            for callback in (unknown, stale):
                response = await http.post(
                    "/v1/callbacks/wechatpay", content=callback.body, headers=callback.headers
                )
                assert response.status_code == 400
            sha1 = alipay(keys, sign_type=f"RSA-{n}")
            response = await http.post("/v1/callbacks/alipay", content=sha1.body)
            assert response.status_code == 400

    assert tally(books) == {
        ("wechatpay", "wechatpay-serial … names no key of ours"): 25,
        ("wechatpay", "wechatpay-timestamp … is 5 minutes or more from now"): 25,
        ("alipay", "sign_type … is not accepted, RSA2 only"): 25,
    }
    assert money_and_trail(books)["attempts"] == 0


HOSTILE_PATHS = [
    "/v1/callbacks/%00",
    "/v1/callbacks/%FF%FE%00",
    "/v1/callbacks/" + "g" * 4000,
    "/v1/callbacks/alipay/extra",
    "/v1/callbacks/alipay?%00=%FF&sign=" + "q" * 4000,
    "/v1/callbacks/wechatpay?" + "%ZZ" * 1000,
]
HOSTILE_BODIES = [
    b"",
    b"\x00" * 100,
    b"\xff\xfe\xfd\x80",
    "é".encode() * 20000,
    b"sign_type=RSA2&sign=" + b"%00" * 5000 + b"&notify_id=" + b"\xff" * 100,
    b"sign_type=RSA2&sign=" + "签".encode() * 2000,
    b"{" * 20000,
    json.dumps({"resource": {"ciphertext": "\x00" * 1000}}).encode(),
]
HOSTILE_HEADERS: list[dict[bytes, bytes]] = [
    {b"Content-Type": b"application/json; charset=\xff"},
    {
        b"Wechatpay-Timestamp": b"\xff\xfe",
        b"Wechatpay-Nonce": b"\x80" * 100,
        b"Wechatpay-Serial": SANDBOX_WECHATPAY_PUBLIC_KEY_ID.encode(),
        b"Wechatpay-Signature": "é".encode() * 500,
    },
    {
        b"Wechatpay-Timestamp": b"9" * 5000,
        b"Wechatpay-Nonce": b"n" * 5000,
        b"Wechatpay-Serial": b"s" * 5000,
        b"Wechatpay-Signature": b"x" * 5000,
        b"Wechatpay-Signature-Type": b"\xa0" * 100,
    },
    {b"X-Forwarded-For": b"\xff, , ::1, 999.1.1.1" * 100},
]


async def test_no_input_gets_a_500(books: Engine, keys: Keys) -> None:
    before = money_and_trail(books)
    async with api(books, keys, trusted_proxies="127.0.0.1/32") as http:
        answers = [await http.post(path, content=b"x=1") for path in HOSTILE_PATHS]
        for gateway in Gateway:
            for body in HOSTILE_BODIES:
                answers.append(await http.post(f"/v1/callbacks/{gateway}", content=body))
            for headers in HOSTILE_HEADERS:
                answers.append(
                    await http.post(f"/v1/callbacks/{gateway}", content=b"{}", headers=headers)
                )
    for response in answers:
        assert 400 <= response.status_code < 500, (response.request.url, response.text)
        said = response.json()
        assert said.get("detail") or said.get("message"), response.text
    assert money_and_trail(books) == before


# Size before memory.


async def announce(base_url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST announcing 200 MB and sending a few bytes of it; the status and body answered."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    reader, writer = await asyncio.open_connection(host, port)
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {200 * 2**20}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n{").encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1]), body


async def streamed(total: int) -> AsyncIterator[bytes]:
    """`total` bytes sent chunked, as a client that announces nothing would."""
    for start in range(0, total, 4096):
        yield b" " * min(4096, total - start)


BEARER = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.mark.parametrize("authorized", [False, True], ids=["no key", "a key"])
async def test_a_body_over_its_limit_is_refused_unread(
    engine: Engine, keys: Keys, authorized: bool
) -> None:
    headers = {"Content-Type": "application/json", **(BEARER if authorized else {})}
    async with api(engine, keys) as http:
        base = str(http.base_url)
        for path in ("/v1/orders", "/v1/orders/ord_nobody/cancel"):
            status, body = await announce(base, path, headers)
            assert status == 413 and b"limit of 16384 bytes" in body
            response = await http.post(
                path, content=streamed(CLIENT_MAX_BODY_BYTES + 1), headers=headers
            )
            assert response.status_code == 413, response.text
            assert "limit of 16384 bytes" in response.json()["detail"]
        # Up to the limit, a body is read and judged on what it says.
        padded = json.dumps({"reservation_id": "r", "days": 1, "pad": ""}).encode()
        at_limit = padded[:-2] + b" " * (CLIENT_MAX_BODY_BYTES - len(padded)) + b'"}'
        response = await http.post("/v1/orders", content=at_limit, headers=headers)
        assert response.status_code == (422 if authorized else 401), response.text

        for gateway in Gateway:
            status, body = await announce(base, f"/v1/callbacks/{gateway}", headers)
            assert status == 413 and b"the body is over 65536 bytes" in body
            response = await http.post(
                f"/v1/callbacks/{gateway}", content=streamed(MAX_BODY_BYTES + 1)
            )
            assert response.status_code == 413
            assert "the body is over 65536 bytes" in refusal_said(gateway, response)
    assert tally(engine) == {(gateway, "the body is over … bytes"): 2 for gateway in Gateway}


# Where callbacks may come from.


async def notify(http: httpx.AsyncClient, gateway: Gateway, forwarded_for: str | None) -> int:
    """An empty callback: refused for its source (403), or, past that, for no signature (400)."""
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    response = await http.post(f"/v1/callbacks/{gateway}", content=b"", headers=headers)
    return response.status_code


async def test_callbacks_come_only_from_their_gateways_networks(engine: Engine, keys: Keys) -> None:
    behind_proxy = {"alipay_callback_sources": "10.9.0.0/16", "trusted_proxies": "127.0.0.1/32"}
    async with api(engine, keys, **behind_proxy) as http:
        assert await notify(http, Gateway.ALIPAY, "10.9.1.2") == 400
        assert await notify(http, Gateway.ALIPAY, "198.51.100.7, 10.9.1.2, 127.0.0.1") == 400
        # Only what our proxy saw counts: the client's own claim, left of it, does not.
        assert await notify(http, Gateway.ALIPAY, "10.9.1.2, 203.0.113.9") == 403
        assert await notify(http, Gateway.ALIPAY, None) == 403
        assert await notify(http, Gateway.ALIPAY, "not an address") == 403
        assert await notify(http, Gateway.WECHATPAY, "203.0.113.9") == 400  # no list: anywhere
    async with api(engine, keys, alipay_callback_sources="10.9.0.0/16") as http:
        # No proxy of ours in between: X-Forwarded-For is whatever the caller wrote.
        assert await notify(http, Gateway.ALIPAY, "10.9.1.2") == 403
    async with api(engine, keys, alipay_callback_sources="192.0.2.0/24,127.0.0.0/8") as http:
        assert await notify(http, Gateway.ALIPAY, "192.0.2.1") == 400
    assert tally(engine) == {
        ("alipay", "alipay callbacks are not taken from …"): 3,
        ("alipay", "the request's source address cannot be told"): 1,
        ("alipay", "missing field sign_type"): 3,
        ("wechatpay", "missing header wechatpay-timestamp"): 1,
    }


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("alipay_callback_sources", "10.0.0.0/8, 10.1.2.3/8"),
        ("wechatpay_callback_sources", "example.com"),
        ("trusted_proxies", "127.0.0.1,"),
    ],
)
def test_a_source_list_that_is_not_networks_stops_the_api(
    keys: Keys, setting: str, value: str
) -> None:
    settings: dict[str, Any] = {setting: value}
    with pytest.raises(SettingsError, match=f"PAYSAGA_{setting.upper()}: "):
        create_app(Settings(home=keys.home, **settings))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.9", ["10.0.0.1"], "203.0.113.9"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),
        ("10.0.0.1", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        ("::ffff:203.0.113.9", [], "203.0.113.9"),
        ("10.0.0.1", ["2001:db8::1"], "2001:db8::1"),
        ("10.0.0.1", ["203.0.113.9:4711"], None),
        (None, ["203.0.113.9"], None),
    ],
)
def test_the_client_is_the_first_address_our_proxies_did_not_write(
    peer: str | None, forwarded_for: list[str], client: str | None
) -> None:
    trusted = (ip_network("10.0.0.0/24"),)
    found = client_address(peer, forwarded_for, trusted)
    assert found == (None if client is None else ip_address(client))


# Signed client requests.


def signed(
    key: str,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The Authorization header, built from the protocol as a client would build it."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    lines = [method, target, str(timestamp), nonce, hashlib.sha256(body).hexdigest()]
    digest = hmac.new(key.encode(), ("\n".join(lines) + "\n").encode(), hashlib.sha256).digest()
    fields = {
        "key_id": key_id(key),
        "timestamp": str(timestamp),
        "nonce": nonce,
        "signature": base64.b64encode(digest).decode(),
    }
    return {
        "Authorization": "PAYSAGA-HMAC-SHA256 "
        + ",".join(f'{name}="{value}"' for name, value in fields.items())
    }


async def test_a_signed_request_is_believed_once_fresh_and_untouched(
    books: Engine, keys: Keys
) -> None:
    path = f"/v1/orders/{ALIPAY_ORDER}"
    async with api(books, keys) as http:
        headers = signed(CLIENT_KEY, "GET", path)
        assert (await http.get(path, headers=headers)).status_code == 200
        with_query = signed(SIGNING_KEY, "GET", path + "?view=full")
        assert (await http.get(path + "?view=full", headers=with_query)).status_code == 200

        refused = {
            "replay": (await http.get(path, headers=headers), "a replay"),
            "stale": (
                await http.get(path, headers=signed(CLIENT_KEY, "GET", path, timestamp=10**9)),
                "5 minutes",
            ),
            "query added": (
                await http.get(path + "?x=1", headers=signed(CLIENT_KEY, "GET", path)),
                "signature does not verify",
            ),
            "other key's id": (
                await http.get(
                    path,
                    headers={
                        "Authorization": signed(CLIENT_KEY, "GET", path)["Authorization"].replace(
                            key_id(CLIENT_KEY), key_id(SIGNING_KEY)
                        )
                    },
                ),
                "signature does not verify",
            ),
            "unknown key": (
                await http.get(path, headers=signed("psk_nobody_has_this", "GET", path)),
                "names no API key",
            ),
            "malformed": (
                await http.get(path, headers={"Authorization": "PAYSAGA-HMAC-SHA256 key_id=x"}),
                "takes key_id",
            ),
            "must sign": (
                await http.get(path, headers={"Authorization": f"Bearer {SIGNING_KEY}"}),
                "must sign",
            ),
        }
        # The body is signed too: judged on what it says when untouched, refused when not.
        order = json.dumps({"reservation_id": "room-9", "days": 0}).encode()
        headers = {
            "Content-Type": "application/json",
            **signed(CLIENT_KEY, "POST", "/v1/orders", order),
        }
        invalid = await http.post("/v1/orders", content=order, headers=headers)
        assert invalid.status_code == 422, invalid.text
        tampered_body = order.replace(b'"days": 0', b'"days": 9')
        headers = {
            "Content-Type": "application/json",
            **signed(CLIENT_KEY, "POST", "/v1/orders", order),
        }
        refused["tampered body"] = (
            await http.post("/v1/orders", content=tampered_body, headers=headers),
            "signature does not verify",
        )

    for name, (response, said) in refused.items():
        assert response.status_code == 401, (name, response.text)
        assert said in response.json()["detail"], (name, response.text)
        assert "PAYSAGA-HMAC-SHA256" in response.headers["WWW-Authenticate"], name


# Each key's budget.


async def test_a_key_over_its_budget_waits_as_told(engine: Engine, keys: Keys) -> None:
    path = "/v1/reservations/room-none"
    async with api(engine, keys, rate_limit_requests=3, rate_limit_window_seconds=2) as http:
        for _ in range(3):
            assert (await http.get(path, headers=BEARER)).status_code == 404
        over = await http.get(path, headers=BEARER)
        assert over.status_code == 429 and "budget" in over.json()["detail"]
        wait = int(over.headers["Retry-After"])
        assert 1 <= wait <= 2
        # Another key, and the gateways' callbacks, are not held back by it.
        other = signed(SIGNING_KEY, "GET", path)
        assert (await http.get(path, headers=other)).status_code == 404
        assert (await http.post("/v1/callbacks/alipay", content=b"")).status_code == 400
        await asyncio.sleep(wait)
        assert (await http.get(path, headers=BEARER)).status_code == 404


def test_a_budget_is_earned_back_evenly_over_its_window() -> None:
    now = [0.0]
    limits = RateLimits(requests=4, window_seconds=8, clock=lambda: now[0])
    assert [limits.retry_after("k") for _ in range(5)] == [None] * 4 + [2]
    now[0] = 1.0
    assert limits.retry_after("k") == 1
    now[0] = 2.0
    assert limits.retry_after("k") is None
    assert limits.retry_after("other") is None
    now[0] = 1000.0  # a long pause refills the budget, never past it
    assert [limits.retry_after("k") for _ in range(5)] == [None] * 4 + [2]
