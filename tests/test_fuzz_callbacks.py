"""Hypothesis at the callback doors, `POST /v1/callbacks/{gateway}`, of the real app over HTTP
on a real database (PAYSAGA_TEST_DATABASE), without Temporal (a refused callback never reaches
it).

Whatever comes — random bytes, NULs, invalid UTF-8, huge and odd forms and JSON, odd headers,
paths and query strings, and every mutation of a correctly signed notification — is answered
below 500, and changes no order, payment, refund or audit record unless the gateway's
signature over it holds. Whether it holds is judged here from each gateway's protocol, not by
the code under test."""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from api.app import create_app
from core.settings import (
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
)
from core.vocabulary import Gateway
from gateways.alipay_signing import load_private_key, load_public_key
from paysaga.dev import ensure_dev_keys
from stack.notifications import Callback, alipay_callback, wechatpay_callback
from stack.ports import free_port
from store.db import create_db_engine, transaction
from store.models import CallbackAttempt, Order, Payment, Refund, Reservation
from store.schema import upgrade
from tests.databases import database_url
from tests.fuzzing import ODD_TEXT, api_settings, report, texts
from tests.orders import claim
from tests.servers import serving

pytestmark = pytest.mark.slow
DATABASE_KIND = os.environ.get("PAYSAGA_TEST_DATABASE", "sqlite")
EXAMPLES = 200
# What the pending orders cost: in the gateways' words (Alipay's yuan) and in cents.
AMOUNT, CENTS = "29.70", 2970
# Outcomes of callbacks that were believed: none may come of a callback not signed.
BELIEVED = ("payment", "flagged", "refund", "other")
Headers = dict[str, str | bytes]


@dataclass(frozen=True)
class Attempt:
    """One request to a callback door."""

    path: str
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class Keys:
    """The gateways' keys as the sandbox holds them (their signing halves) and the APIv3 key."""

    alipay: rsa.RSAPrivateKey
    alipay_public: rsa.RSAPublicKey
    wechatpay: rsa.RSAPrivateKey
    wechatpay_public: rsa.RSAPublicKey
    apiv3: bytes

    @classmethod
    def of(cls, folder: Path) -> Keys:
        return cls(
            alipay=load_private_key(folder / "sandbox_private.pem"),
            alipay_public=load_public_key(folder / "sandbox_public.pem"),
            wechatpay=load_private_key(folder / "wechatpay_platform_private.pem"),
            wechatpay_public=load_public_key(folder / "wechatpay_platform_public.pem"),
            apiv3=(folder / "wechatpay_apiv3.key").read_bytes().strip(),
        )


@dataclass(frozen=True)
class Door:
    """The app, served; its database; a pending order on each gateway for notifications."""

    url: str
    engine: Engine
    keys: Keys
    kind: str
    # Made once, so that what Hypothesis draws from them is the same when it draws it again.
    genuine: dict[Gateway, Callback]

    def signed(self, attempt: Attempt) -> bool:
        """Whether any reading of the request carries the gateway's valid signature."""
        door = urlsplit(attempt.path).path
        if door == f"/v1/callbacks/{Gateway.ALIPAY}":
            return alipay_signed(attempt.body, self.keys.alipay_public)
        if door == f"/v1/callbacks/{Gateway.WECHATPAY}":
            return wechatpay_signed(attempt.headers, attempt.body, self.keys.wechatpay_public)
        return False


def notification(
    keys: Keys, gateway: Gateway, changes: Mapping[str, Any] | None = None
) -> Callback:
    """The payment notification of the pending order of `gateway`, correctly signed, with
    `changes` to its fields (Alipay) or its resource (WeChat Pay)."""
    if gateway is Gateway.ALIPAY:
        fields = {
            "out_trade_no": order_id(gateway),
            "trade_no": trade_no(gateway),
            "total_amount": AMOUNT,
            **(changes or {}),
        }
        return alipay_callback(keys.alipay, **fields)
    return wechatpay_callback(
        keys.wechatpay,
        key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        apiv3_key=keys.apiv3,
        resource=payment_resource(changes or {}),
    )


def payment_resource(changes: Mapping[str, object]) -> dict[str, object]:
    """What WeChat Pay seals in the notification of the pending order's payment."""
    return {
        "appid": SANDBOX_WECHATPAY_APPID,
        "mchid": SANDBOX_WECHATPAY_MCHID,
        "out_trade_no": order_id(Gateway.WECHATPAY),
        "transaction_id": trade_no(Gateway.WECHATPAY),
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "success_time": "2026-11-23T20:00:00+08:00",
        "amount": {"total": CENTS, "payer_total": CENTS, "currency": "CNY"},
        **changes,
    }


def order_id(gateway: Gateway) -> str:
    return f"ord_fuzz_{gateway}"


def trade_no(gateway: Gateway) -> str:
    return f"fuzz{gateway}0000000000000000001"


@pytest.fixture(scope="module")
async def door(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Door]:
    home = tmp_path_factory.mktemp("fuzz-callbacks")
    ensure_dev_keys(home / "keys")
    with database_url(DATABASE_KIND, home) as url:
        upgrade(url)
        engine = create_db_engine(url)
        for gateway in Gateway:
            claim(engine, order_id(gateway), reservation=f"fuzz-room-{gateway}", gateway=gateway)
        # Nobody listens there: a refused callback never reaches Temporal.
        settings = api_settings(home, url, temporal_address=f"127.0.0.1:{free_port()}")
        keys = Keys.of(home / "keys")
        genuine = {gateway: notification(keys, gateway) for gateway in Gateway}
        async with serving(create_app(settings), free_port()) as served:
            yield Door(served, engine, keys, DATABASE_KIND, genuine)
        engine.dispose()


# --- what the doors must hold to -----------------------------------------------------------


def books(engine: Engine) -> tuple[object, ...]:
    """Every order, payment, refund and reservation, and the number of callbacks believed."""
    with transaction(engine) as session:
        believed = session.exec(
            select(func.count())
            .select_from(CallbackAttempt)
            .where(col(CallbackAttempt.outcome).in_(BELIEVED))
        ).one()
        return (
            [row.model_dump() for row in session.exec(select(Order).order_by(col(Order.id)))],
            [row.model_dump() for row in session.exec(select(Payment).order_by(col(Payment.id)))],
            [
                row.model_dump()
                for row in session.exec(
                    select(Refund).order_by(col(Refund.gateway), col(Refund.refund_no))
                )
            ],
            [
                row.model_dump()
                for row in session.exec(select(Reservation).order_by(col(Reservation.id)))
            ],
            believed,
        )


def knock(door: Door, http: httpx.Client, attempt: Attempt) -> httpx.Response:
    """Send `attempt`; whatever it is, the answer is below 500, and unless it is signed,
    nothing changed. A signed payment may be answered 503: recorded, but Temporal, which these
    tests leave out, did not take it."""
    signed = door.signed(attempt)
    before = books(door.engine)
    response = http.post(attempt.path, headers=_on_the_wire(attempt.headers), content=attempt.body)
    failure = f"{door.kind}: {attempt!r} → {response.status_code} {response.text[:500]!r}"
    if signed and response.status_code == 503:
        assert "not handed on" in response.text, failure
    else:
        assert response.status_code < 500, failure
    if not signed:
        assert books(door.engine) == before, f"changed without a signature: {failure}"
    return response


def _on_the_wire(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [
        (name.encode(), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in headers.items()
    ]


async def fuzz(
    door: Door,
    capsys: pytest.CaptureFixture[str],
    name: str,
    attempts: Callable[[Door], st.SearchStrategy[Attempt]],
) -> None:
    """Knock with `EXAMPLES` attempts drawn from `attempts`, from a thread of their own, so that
    the app keeps serving in this event loop; then say how many were made."""
    made = 0

    def run() -> None:
        # A connection each: after a 500, uvicorn drops the connection, and a request sent on
        # it again would fail for that, not for what it holds.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=door.url, timeout=30, limits=no_reuse) as http:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(attempt=attempts(door))
            def knocks(attempt: Attempt) -> None:
                nonlocal made
                made += 1
                knock(door, http, attempt)

            knocks()

    try:
        await asyncio.to_thread(run)
    finally:
        report(capsys, f"hypothesis {name} on {door.kind}: {made} cases")


async def test_anything_unsigned_is_refused_without_a_server_error(
    door: Door, capsys: pytest.CaptureFixture[str]
) -> None:
    await fuzz(door, capsys, "unsigned callbacks", lambda _: unsigned_attempts())


async def test_a_signed_notification_changed_in_any_way_changes_nothing(
    door: Door, capsys: pytest.CaptureFixture[str]
) -> None:
    await fuzz(door, capsys, "mutated notifications", mutated_notifications)


async def test_signed_nonsense_is_refused_without_a_server_error(
    door: Door, capsys: pytest.CaptureFixture[str]
) -> None:
    await fuzz(door, capsys, "signed nonsense", signed_nonsense)


# --- each gateway's signature, judged from its protocol --------------------------------------


def alipay_signed(body: bytes, public_key: rsa.RSAPublicKey) -> bool:
    """RSA2 over the sorted `k=v` pairs but `sign` and `sign_type`, empty values left out; a
    field given twice is read both ways."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return False
    for fields in (dict(pairs), dict(reversed(pairs))):
        message = "&".join(
            f"{name}={value}"
            for name, value in sorted(fields.items())
            if name not in ("sign", "sign_type") and value != ""
        )
        if _verifies(public_key, fields.get("sign", ""), message.encode()):
            return True
    return False


def wechatpay_signed(headers: Headers, body: bytes, public_key: rsa.RSAPublicKey) -> bool:
    """`Wechatpay-Signature` over `"{timestamp}\\n{nonce}\\n{body}\\n"`, by the key
    `Wechatpay-Serial` names; each header read as sent and without surrounding blanks, and
    every value of a header given twice."""

    def readings(name: str) -> list[str]:
        values = [
            value.decode("latin-1") if isinstance(value, bytes) else value
            for key, value in headers.items()
            if key.lower() == name
        ]
        return [*values, *(value.strip() for value in values)]

    for stamp, nonce, serial, signature in itertools.product(
        *map(readings, ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-serial")),
        readings("wechatpay-signature"),
    ):
        message = f"{stamp}\n{nonce}\n".encode() + body + b"\n"
        if serial == SANDBOX_WECHATPAY_PUBLIC_KEY_ID and _verifies(public_key, signature, message):
            return True
    return False


def _verifies(public_key: rsa.RSAPublicKey, signature: str, message: bytes) -> bool:
    try:
        raw = base64.b64decode(signature)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def _sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


# --- what is sent ----------------------------------------------------------------------------

DOORS = [f"/v1/callbacks/{gateway}" for gateway in Gateway]
# Bytes an HTTP header value may hold (h11 sends nothing else): no NUL, CR or LF.
HEADER_BYTE = st.sampled_from([bytes([b]) for b in (*range(0x21, 0x7F), *range(0x80, 0x100))])
HEADER_WORDS = st.lists(st.lists(HEADER_BYTE, min_size=1, max_size=40).map(b"".join), max_size=4)
WECHATPAY_HEADERS = (
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Serial",
    "Wechatpay-Signature",
    "Wechatpay-Signature-Type",
)
TOKEN = st.text(
    st.sampled_from(
        "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ),
    min_size=1,
    max_size=30,
)
SCHEME = "WECHATPAY2-SHA256-RSA2048"
PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
ALIPAY_FIELDS = ["out_trade_no", "trade_no", "notify_id", "total_amount", "trade_status", "app_id"]
AMOUNTS = st.one_of(
    st.sampled_from(
        ["29.71", "0.01", "-29.70", "29.700", "29.7", "2.97e1", "NaN", "Infinity", "", " 29.70"]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    texts(max_size=20),
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**20, max_value=10**40)
    | st.floats()
    | st.text()
    | ODD_TEXT,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=20,
)


def seconds_from_now(most: int) -> st.SearchStrategy[str]:
    """A Unix time up to `most` seconds off now. The offset is what is drawn: drawing it again
    draws the same, whenever that is."""
    return st.integers(min_value=-most, max_value=most).map(
        lambda offset: str(int(time.time()) + offset)
    )


def header_values() -> st.SearchStrategy[bytes | str]:
    return st.one_of(
        HEADER_WORDS.map(b" ".join),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        seconds_from_now(600),
        st.integers(min_value=20, max_value=4000).map("9".__mul__),
        st.sampled_from(
            ["", "０１２３", "١٧٠٠٠٠٠٠٠٠", "1e9", "0x10", "WECHATPAY/SIGNTEST/AAAA"]
        ).map(str.encode),
        st.sampled_from([SANDBOX_WECHATPAY_PUBLIC_KEY_ID, SCHEME]),
        PRINTABLE,
    )


def paths() -> st.SearchStrategy[str]:
    """The doors, mostly; odd gateway names; and any of them with an odd query string."""
    segment = st.one_of(
        texts(max_size=300),
        st.sampled_from(
            ["ALIPAY", "alipay ", "alipay\x00", "..", "alipay/..", "%", "wechatpay%00"]
        ),
    ).map(lambda name: "/v1/callbacks/" + quote(name, safe=""))
    query = st.one_of(
        st.just(""),
        st.lists(st.tuples(texts(max_size=20), texts(max_size=20)), max_size=4).map(
            lambda pairs: "?" + urlencode(pairs)
        ),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
            "?{}".format
        ),
    )
    door = st.integers(min_value=0, max_value=4).flatmap(
        lambda pick: segment if pick == 0 else st.sampled_from(DOORS)
    )
    return st.builds(str.__add__, door, query)


def bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=200).map(lambda noise: b"\x00" + noise + b"\x00"),
        # Not UTF-8: lone continuation bytes, a surrogate, an overlong encoding.
        st.sampled_from([b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff\xfe\x00"]).flatmap(
            lambda odd: st.binary(max_size=100).map(odd.__add__)
        ),
        st.lists(st.tuples(texts(max_size=30), texts(max_size=60)), max_size=20).map(
            lambda pairs: urlencode(pairs).encode()
        ),
        st.lists(st.tuples(TOKEN, AMOUNTS), max_size=20).map(
            lambda pairs: "&".join(f"{name}={value}" for name, value in pairs).encode()
        ),
        st.sampled_from([b"&&&", b"===", b"%", b"%%%", b"a=%zz", b"a=1&a=2", b"=&="]),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.integers(min_value=1, max_value=100_000).map(lambda depth: b"[" * depth),
        st.integers(min_value=4000, max_value=10_000).map(lambda digits: b"1" * digits),
        st.sampled_from([b"NaN", b"-Infinity", b'{"a": 1, "a": 2}', b"{}", b"[]", b"null"]),
        st.integers(min_value=60_000, max_value=200_000).map(lambda size: b"a=" + b"x" * size),
    )


def unsigned_attempts() -> st.SearchStrategy[Attempt]:
    # Each signature header, as WeChat Pay would send it or odd: refusals at every check.
    plausible: dict[str, st.SearchStrategy[str | bytes]] = {
        "Wechatpay-Timestamp": seconds_from_now(400),
        "Wechatpay-Nonce": PRINTABLE,
        "Wechatpay-Serial": st.just(SANDBOX_WECHATPAY_PUBLIC_KEY_ID),
        "Wechatpay-Signature": st.binary(min_size=256, max_size=256).map(base64.b64encode),
    }
    signature_headers = st.fixed_dictionaries(
        {name: st.one_of(value, value, header_values()) for name, value in plausible.items()},
        optional={WECHATPAY_HEADERS[4]: st.one_of(st.just(SCHEME), header_values())},
    )
    other_headers = st.dictionaries(
        st.one_of(
            st.sampled_from(WECHATPAY_HEADERS),
            st.sampled_from(WECHATPAY_HEADERS).map(str.lower),
            st.sampled_from(["Content-Type", "Content-Encoding", "Expect", "Connection"]),
            TOKEN,
        ),
        header_values(),
        max_size=6,
    )
    headers = st.builds(
        lambda signature, others: {**signature, **others},
        st.one_of(st.just({}), signature_headers, signature_headers),
        other_headers,
    ).filter(_sendable)
    return st.builds(Attempt, path=paths(), headers=headers, body=bodies())


def _sendable(headers: Headers) -> bool:
    # httpx sets these itself; one given twice, or at odds with the body, is not a request.
    return not {name.lower() for name in headers} & {"content-length", "transfer-encoding"}


@st.composite
def mutated_notifications(draw: st.DrawFn, door: Door) -> Attempt:
    """A correctly signed notification, changed in one to three ways."""
    gateway = draw(st.sampled_from(list(Gateway)))
    genuine = door.genuine[gateway]
    path = draw(
        st.one_of(
            st.just(f"/v1/callbacks/{gateway}"),
            st.sampled_from(DOORS),
            paths(),
        )
    )
    attempt = Attempt(path, dict(genuine.headers), genuine.body)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        mutation = draw(st.sampled_from(MUTATIONS[gateway]))
        attempt = draw(mutation(attempt))
    return attempt


Mutation = Callable[[Attempt], st.SearchStrategy[Attempt]]


def _with_body(attempt: Attempt, body: bytes) -> Attempt:
    return Attempt(attempt.path, attempt.headers, body)


def flip_a_byte(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    if not attempt.body:
        return st.just(attempt)
    return st.tuples(
        st.integers(min_value=0, max_value=len(attempt.body) - 1),
        st.integers(min_value=1, max_value=255),
    ).map(
        lambda change: _with_body(
            attempt,
            attempt.body[: change[0]]
            + bytes([attempt.body[change[0]] ^ change[1]])
            + attempt.body[change[0] + 1 :],
        )
    )


def insert_bytes(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    return st.tuples(
        st.integers(min_value=0, max_value=len(attempt.body)), st.binary(min_size=1, max_size=20)
    ).map(
        lambda change: _with_body(
            attempt, attempt.body[: change[0]] + change[1] + attempt.body[change[0] :]
        )
    )


def cut_bytes(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    size = len(attempt.body)
    return st.tuples(
        st.integers(min_value=0, max_value=size), st.integers(min_value=1, max_value=size + 1)
    ).map(lambda cut: _with_body(attempt, attempt.body[: cut[0]] + attempt.body[cut[0] + cut[1] :]))


def _form(attempt: Attempt) -> list[tuple[str, str]]:
    try:
        return parse_qsl(attempt.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return []


def _with_form(attempt: Attempt, pairs: list[tuple[str, str]]) -> Attempt:
    return _with_body(attempt, urlencode(pairs).encode())


def drop_a_field(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    pairs = _form(attempt)
    if not pairs:
        return st.just(attempt)
    return st.integers(min_value=0, max_value=len(pairs) - 1).map(
        lambda at: _with_form(attempt, pairs[:at] + pairs[at + 1 :])
    )


def repeat_a_field(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    pairs = _form(attempt)
    if not pairs:
        return st.just(attempt)
    return st.tuples(st.sampled_from(pairs), st.one_of(st.none(), AMOUNTS, texts(max_size=30))).map(
        lambda repeat: _with_form(
            attempt, [*pairs, (repeat[0][0], repeat[0][1] if repeat[1] is None else repeat[1])]
        )
    )


def change_a_field(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    pairs = _form(attempt)
    if not pairs:
        return st.just(attempt)
    names = [name for name, _ in pairs]
    return st.tuples(
        st.sampled_from(["total_amount", "out_trade_no", "trade_status", "app_id", *names]),
        st.one_of(
            AMOUNTS,
            st.sampled_from(["TRADE_SUCCESS", "TRADE_FINISHED", "TRADE_CLOSED", "RSA", "RSA2"]),
            st.sampled_from([order_id(Gateway.WECHATPAY), "ord_nobody", "2021000000000001"]),
            texts(max_size=60),
            ODD_TEXT,
        ),
    ).map(
        lambda change: _with_form(
            attempt,
            [(name, change[1] if name == change[0] else value) for name, value in pairs]
            + ([] if change[0] in names else [change]),
        )
    )


def reorder_fields(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    return st.permutations(_form(attempt)).map(lambda pairs: _with_form(attempt, list(pairs)))


def _envelope(attempt: Attempt) -> dict[str, Any]:
    try:
        value = json.loads(attempt.body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def change_the_envelope(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    envelope = _envelope(attempt)
    if not envelope:
        return st.just(attempt)
    resource = envelope.get("resource")
    sealed = resource if isinstance(resource, dict) else {}
    fields = [("", name) for name in envelope] + [("resource", name) for name in sealed]

    def changed(change: tuple[tuple[str, str], object, bool]) -> Attempt:
        (where, name), value, drop = change
        copy = json.loads(json.dumps(envelope))
        target = copy[where] if where else copy
        if drop:
            target.pop(name, None)
        else:
            target[name] = value
        return _with_body(attempt, json.dumps(copy).encode())

    return st.tuples(
        st.sampled_from(fields),
        st.one_of(
            st.sampled_from(["REFUND.SUCCESS", "TRANSACTION.SUCCESS", "encrypt-resource"]),
            JSON_VALUES,
        ),
        st.booleans(),
    ).map(changed)


def respace_the_json(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    envelope = _envelope(attempt)
    if not envelope:
        return st.just(attempt)
    return st.sampled_from([0, 1, 2]).map(
        lambda indent: _with_body(attempt, json.dumps(envelope, indent=indent).encode())
    )


def change_a_header(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    def changed(change: tuple[str, bytes | str | None, bool]) -> Attempt:
        name, value, lower = change
        headers = {key: kept for key, kept in attempt.headers.items() if key != name}
        if value is not None:
            headers[name.lower() if lower else name] = value
        return Attempt(attempt.path, headers, attempt.body)

    return st.tuples(
        st.sampled_from(WECHATPAY_HEADERS), st.one_of(st.none(), header_values()), st.booleans()
    ).map(changed)


def repeat_a_header(attempt: Attempt) -> st.SearchStrategy[Attempt]:
    # The same name in another case is the same header, sent twice.
    return st.tuples(st.sampled_from(WECHATPAY_HEADERS[:4]), header_values()).map(
        lambda repeat: Attempt(
            attempt.path, {**attempt.headers, repeat[0].lower(): repeat[1]}, attempt.body
        )
    )


BYTES: list[Mutation] = [flip_a_byte, insert_bytes, cut_bytes]
MUTATIONS: dict[Gateway, list[Mutation]] = {
    Gateway.ALIPAY: [*BYTES, drop_a_field, repeat_a_field, change_a_field, reorder_fields],
    Gateway.WECHATPAY: [
        *BYTES,
        change_the_envelope,
        respace_the_json,
        change_a_header,
        repeat_a_header,
    ],
}


@st.composite
def signed_nonsense(draw: st.DrawFn, door: Door) -> Attempt:
    """Bodies the code under test reads only once a signature holds: forms signed with Alipay's
    key; JSON signed with WeChat Pay's, its resource sealed with the APIv3 key or not."""
    gateway = draw(st.sampled_from(list(Gateway)))
    if gateway is Gateway.ALIPAY:
        fields = draw(
            st.dictionaries(
                st.one_of(
                    st.sampled_from(ALIPAY_FIELDS),
                    # `key` is alipay_callback's own argument: the signing key.
                    texts(max_size=20).filter(lambda name: name != "key"),
                ),
                st.one_of(AMOUNTS, texts(max_size=60), ODD_TEXT),
                max_size=8,
            )
        )
        return Attempt(
            f"/v1/callbacks/{gateway}", {}, notification(door.keys, gateway, fields).body
        )
    body = draw(
        st.one_of(
            bodies(),
            st.builds(
                _sealed_envelope,
                st.just(door.keys.apiv3),
                st.one_of(
                    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
                    st.dictionaries(
                        st.sampled_from(
                            ["appid", "mchid", "out_trade_no", "transaction_id", "trade_state"]
                            + ["amount", "success_time", "refund_status"]
                        ),
                        st.one_of(JSON_VALUES, ODD_TEXT),
                        max_size=3,
                    ).map(lambda fields: json.dumps(payment_resource(fields)).encode()),
                ),
                st.sampled_from(["TRANSACTION.SUCCESS", "REFUND.SUCCESS", "TRANSACTION.CLOSED"]),
            ),
        )
    )
    stamp, nonce = str(int(time.time())), draw(st.uuids()).hex
    message = f"{stamp}\n{nonce}\n".encode() + body + b"\n"
    headers: Headers = {
        "Content-Type": "application/json",
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        "Wechatpay-Signature": _sign(door.keys.wechatpay, message),
    }
    return Attempt(f"/v1/callbacks/{gateway}", headers, body)


def _sealed_envelope(apiv3_key: bytes, plaintext: bytes, event_type: str) -> bytes:
    associated = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    nonce = uuid.uuid4().hex[:12]
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated.encode())
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": "2026-11-23T20:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "resource": {
                "original_type": associated,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": associated,
                "nonce": nonce,
            },
        }
    ).encode()
