"""WechatPayNotifications against notifications sealed and signed here the way WeChat Pay does it,
with `cryptography` itself: AES-256-GCM under the APIv3 key, SHA256withRSA over the raw body."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateways.errors import NotificationRejected
from gateways.gateway import CallbackReply, CallbackRequest, EventKind, NotifiedEvent
from gateways.wechatpay import WechatPayConfig
from gateways.wechatpay_notification import WechatPayNotifications

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
MCHID = "1900000109"
APPID = "wx8888888888888888"
KEY_ID = "PUB_KEY_ID_0119000001092026112300000000000001"
CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3_KEY = b"0123456789abcdefghijABCDEFGHIJ01"
NONCE = "593BEC0C930BF1AFEB40B4A08C8FB242"
RESOURCE_NONCE = "fdasflkja484"


@pytest.fixture(scope="module")
def wechatpay_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def door(
    wechatpay_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> WechatPayNotifications:
    return WechatPayNotifications(
        WechatPayConfig(
            gateway_url="https://api.mch.weixin.qq.com",
            mchid=MCHID,
            appid=APPID,
            merchant_private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            merchant_serial="0123456789ABCDEF0123456789ABCDEF01234567",
            apiv3_key=APIV3_KEY,
            # Mid-switch from a platform certificate to a public key: both are live.
            wechatpay_public_keys={
                KEY_ID: wechatpay_key.public_key(),
                CERT_SERIAL: platform_key.public_key(),
            },
            notify_url="https://shop.example/v1/callbacks/wechatpay",
        )
    )


def transaction(**changes: Any) -> dict[str, Any]:
    """A Native payment's resource, as WeChat Pay seals it into TRANSACTION.SUCCESS."""
    fields: dict[str, Any] = {
        "appid": APPID,
        "mchid": MCHID,
        "out_trade_no": "ord_1",
        "transaction_id": "4200000000202611230000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "",
        "success_time": "2026-11-23T19:59:58+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 2970, "payer_total": 2970, "currency": "CNY", "payer_currency": "CNY"},
    }
    return fields | changes


def refund(**changes: Any) -> dict[str, Any]:
    """A refund's resource, as WeChat Pay seals it into REFUND.SUCCESS: no appid."""
    fields: dict[str, Any] = {
        "mchid": MCHID,
        "out_trade_no": "ord_1",
        "transaction_id": "4200000000202611230000000001",
        "out_refund_no": "rf_4200000000202611230000000001",
        "refund_id": "50000000382019052709732678859",
        "refund_status": "SUCCESS",
        "success_time": "2026-11-24T10:15:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": 2970, "refund": 2970, "payer_total": 2970, "payer_refund": 2970},
    }
    return fields | changes


def sealed(
    resource: bytes, *, associated_data: str, key: bytes = APIV3_KEY, nonce: str = RESOURCE_NONCE
) -> dict[str, Any]:
    ciphertext = AESGCM(key).encrypt(nonce.encode(), resource, associated_data.encode())
    return {
        "original_type": associated_data,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def envelope(
    resource: dict[str, Any] | bytes,
    *,
    event_type: str = "TRANSACTION.SUCCESS",
    apiv3_key: bytes = APIV3_KEY,
    **changes: Any,
) -> dict[str, Any]:
    """The notification's JSON body, its resource sealed."""
    associated_data = "refund" if event_type.startswith("REFUND.") else "transaction"
    plaintext = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    fields: dict[str, Any] = {
        "id": "EV-2018022511223320873",
        "create_time": "2026-11-23T20:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": sealed(plaintext, associated_data=associated_data, key=apiv3_key),
    }
    return fields | changes


def signed(
    body: dict[str, Any] | bytes,
    key: rsa.RSAPrivateKey,
    *,
    serial: str = KEY_ID,
    timestamp: datetime = NOW,
    nonce: str = NONCE,
) -> CallbackRequest:
    """The request WeChat Pay POSTs: the body as sent, its headers (in lower case, as paysaga's
    callback route hands them over) signing `"{timestamp}\\n{nonce}\\n{body}\\n"`."""
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    stamp = str(int(timestamp.timestamp()))
    message = f"{stamp}\n{nonce}\n".encode() + raw + b"\n"
    signature = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))
    return CallbackRequest(
        headers={
            "content-type": "application/json",
            "wechatpay-timestamp": stamp,
            "wechatpay-nonce": nonce,
            "wechatpay-serial": serial,
            "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
            "wechatpay-signature": signature.decode(),
        },
        body=raw,
    )


def with_headers(request: CallbackRequest, **headers: str | None) -> CallbackRequest:
    """`request` with some headers changed (underscores for dashes) or, given None, dropped."""
    changed = dict(request.headers)
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            del changed[name]
        else:
            changed[name] = value
    return CallbackRequest(headers=changed, body=request.body)


def rejection(door: WechatPayNotifications, request: CallbackRequest, now: datetime = NOW) -> str:
    with pytest.raises(NotificationRejected) as caught:
        door.verify(request, now=now)
    return caught.value.reason


# --- what it is about -----------------------------------------------------------------------


def test_payment_notification_is_a_payment(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    event = door.verify(signed(envelope(transaction()), wechatpay_key), now=NOW)

    assert event == NotifiedEvent(
        gateway="wechatpay",
        kind=EventKind.PAYMENT,
        event_id="EV-2018022511223320873",
        out_trade_no="ord_1",
        trade_no="4200000000202611230000000001",
        trade_status="SUCCESS",
        amount_cents=2970,
        paid_at=datetime(2026, 11, 23, 11, 59, 58, tzinfo=UTC),
        nonce=NONCE,
    )
    assert type(event.amount_cents) is int


def test_refund_notification_is_a_refund_never_a_payment(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(refund(), event_type="REFUND.SUCCESS"), wechatpay_key)

    event = door.verify(request, now=NOW)

    assert event == NotifiedEvent(
        gateway="wechatpay",
        kind=EventKind.REFUND,
        event_id="EV-2018022511223320873",
        out_trade_no="ord_1",
        trade_no="4200000000202611230000000001",
        trade_status="SUCCESS",
        amount_cents=2970,
        paid_at=None,
        nonce=NONCE,
    )


@pytest.mark.parametrize("event_type", ["REFUND.ABNORMAL", "REFUND.CLOSED"])
def test_failed_refunds_are_refunds(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, event_type: str
) -> None:
    status = event_type.removeprefix("REFUND.")
    resource = refund(refund_status=status, success_time=None)

    event = door.verify(signed(envelope(resource, event_type=event_type), wechatpay_key), now=NOW)

    assert (event.kind, event.trade_status) == (EventKind.REFUND, status)


def test_refund_resource_with_a_payment_state_is_still_a_refund(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    # Even carrying a paid transaction's fields, a REFUND.* event never counts as money in.
    resource = transaction(refund_status="SUCCESS")
    request = signed(envelope(resource, event_type="REFUND.SUCCESS"), wechatpay_key)

    assert door.verify(request, now=NOW).kind is EventKind.REFUND


@pytest.mark.parametrize(
    ("event_type", "trade_state"),
    [
        ("TRANSACTION.SUCCESS", "NOTPAY"),
        ("TRANSACTION.SUCCESS", "CLOSED"),
        ("TRANSACTION.SUCCESS", "REFUND"),
        ("TRANSACTION.CLOSED", "SUCCESS"),
        ("TRANSACTION.FAIL", "PAYERROR"),
    ],
)
def test_anything_but_a_successful_payment_is_other(
    door: WechatPayNotifications,
    wechatpay_key: rsa.RSAPrivateKey,
    event_type: str,
    trade_state: str,
) -> None:
    resource = transaction(trade_state=trade_state, transaction_id=None, success_time=None)
    request = signed(envelope(resource, event_type=event_type), wechatpay_key)

    event = door.verify(request, now=NOW)

    assert event.kind is EventKind.OTHER
    assert (event.trade_status, event.trade_no, event.paid_at) == (trade_state, None, None)
    assert event.amount_cents == 2970


def test_unpaid_trade_without_amount_is_read(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    resource = transaction(trade_state="NOTPAY", amount=None, success_time=None)

    event = door.verify(signed(envelope(resource), wechatpay_key), now=NOW)

    assert (event.kind, event.amount_cents) == (EventKind.OTHER, None)


def test_notification_signed_with_the_other_live_key_verifies(
    door: WechatPayNotifications, platform_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction()), platform_key, serial=CERT_SERIAL)

    assert door.verify(request, now=NOW).kind is EventKind.PAYMENT


# --- authenticity ---------------------------------------------------------------------------


def test_forged_signature_is_refused(door: WechatPayNotifications) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert rejection(door, signed(envelope(transaction()), forger)) == "signature does not verify"


def test_genuine_signature_under_the_other_keys_name_is_refused(
    door: WechatPayNotifications, platform_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction()), platform_key, serial=KEY_ID)

    assert rejection(door, request) == "signature does not verify"


def test_tampered_body_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    genuine = signed(envelope(transaction()), wechatpay_key)
    tampered = genuine.body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.CLOSED")

    assert rejection(door, CallbackRequest(genuine.headers, tampered)) == (
        "signature does not verify"
    )


def test_the_same_json_written_differently_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    # The signature covers the bytes, not a value: re-serialising would break it.
    genuine = signed(envelope(transaction()), wechatpay_key)
    rewritten = json.dumps(json.loads(genuine.body), separators=(",", ":")).encode()

    assert rewritten != genuine.body
    assert rejection(door, CallbackRequest(genuine.headers, rewritten)) == (
        "signature does not verify"
    )


def test_unknown_serial_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction()), wechatpay_key, serial="PUB_KEY_ID_UNKNOWN")

    assert rejection(door, request) == "wechatpay-serial 'PUB_KEY_ID_UNKNOWN' names no key of ours"


def test_wechat_pay_probe_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    genuine = signed(envelope(transaction()), wechatpay_key)
    probe = with_headers(
        genuine, wechatpay_signature="WECHATPAY/SIGNTEST/" + genuine.headers["wechatpay-signature"]
    )

    assert rejection(door, probe) == "signature is WeChat Pay's probe, which must fail"


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (timedelta(seconds=299), True),
        (timedelta(seconds=-299), True),
        (timedelta(seconds=300), False),
        (timedelta(seconds=-300), False),
        (timedelta(days=1), False),
        (timedelta(days=-1), False),
    ],
)
def test_timestamp_must_be_within_5_minutes_of_now(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, age: timedelta, accepted: bool
) -> None:
    # A positive age is a stale notification, a negative one is from the future.
    request = signed(envelope(transaction()), wechatpay_key, timestamp=NOW - age)

    if accepted:
        assert door.verify(request, now=NOW).kind is EventKind.PAYMENT
    else:
        stamp = int((NOW - age).timestamp())
        assert (
            rejection(door, request) == f"wechatpay-timestamp {stamp} is 5 minutes or more from now"
        )


@pytest.mark.parametrize(
    "header", ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"]
)
def test_missing_signature_header_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, header: str
) -> None:
    request = with_headers(signed(envelope(transaction()), wechatpay_key), **{header: None})

    assert rejection(door, request) == f"missing header {header}"


def test_other_signature_type_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = with_headers(
        signed(envelope(transaction()), wechatpay_key),
        wechatpay_signature_type="WECHATPAY2-SM2-WITH-SM3",
    )

    assert rejection(door, request) == (
        "wechatpay-signature-type 'WECHATPAY2-SM2-WITH-SM3' is not WECHATPAY2-SHA256-RSA2048"
    )


def test_signature_type_may_be_left_out(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = with_headers(
        signed(envelope(transaction()), wechatpay_key), wechatpay_signature_type=None
    )

    assert door.verify(request, now=NOW).kind is EventKind.PAYMENT


@pytest.mark.parametrize("timestamp", ["", "soon", "1.5e9", "9" * 40])
def test_timestamp_that_is_not_unix_seconds_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, timestamp: str
) -> None:
    request = with_headers(
        signed(envelope(transaction()), wechatpay_key), **{"wechatpay-timestamp": timestamp}
    )

    expected = (
        "missing header wechatpay-timestamp"
        if timestamp == ""
        else f"wechatpay-timestamp {timestamp!r} is not a Unix time"
    )
    assert rejection(door, request) == expected


# --- the sealed resource --------------------------------------------------------------------


def test_resource_sealed_with_another_apiv3_key_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction(), apiv3_key=bytes(32)), wechatpay_key)

    assert rejection(door, request) == "resource: ciphertext does not decrypt with our APIv3 key"


def test_resource_moved_to_other_associated_data_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    body = envelope(transaction())
    body["resource"]["associated_data"] = "refund"

    assert rejection(door, signed(body, wechatpay_key)) == (
        "resource: ciphertext does not decrypt with our APIv3 key"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"algorithm": "AEAD_AES_128_GCM"},
            "resource.algorithm 'AEAD_AES_128_GCM' is not AEAD_AES_256_GCM",
        ),
        ({"algorithm": None}, "missing field resource.algorithm"),
        ({"nonce": "short"}, "resource: nonce is 5 bytes, not 12"),
        ({"nonce": 123456789012}, "field resource.nonce is not a string"),
        ({"ciphertext": "%%%not base64"}, "resource: ciphertext is not base64"),
        ({"ciphertext": None}, "missing field resource.ciphertext"),
        ({"ciphertext": ["a"]}, "field resource.ciphertext is not a string"),
        ({"associated_data": 7}, "field resource.associated_data is not a string"),
    ],
)
def test_malformed_resource_is_refused(
    door: WechatPayNotifications,
    wechatpay_key: rsa.RSAPrivateKey,
    change: dict[str, Any],
    reason: str,
) -> None:
    body = envelope(transaction())
    body["resource"] = {
        name: value for name, value in (body["resource"] | change).items() if value is not None
    }

    assert rejection(door, signed(body, wechatpay_key)) == reason


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"not json", "decrypted resource is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"[1, 2]", "decrypted resource is not a JSON object"),
        (b"\xff\xfe", "decrypted resource is not UTF-8"),
    ],
)
def test_resource_that_is_not_a_json_object_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, plaintext: bytes, reason: str
) -> None:
    assert rejection(door, signed(envelope(plaintext), wechatpay_key)) == reason


# --- ours? ----------------------------------------------------------------------------------


def test_another_merchants_payment_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction(mchid="1900000999")), wechatpay_key)

    assert rejection(door, request) == "mchid '1900000999' is not ours"


def test_another_apps_payment_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(envelope(transaction(appid="wx9999999999999999")), wechatpay_key)

    assert rejection(door, request) == "appid 'wx9999999999999999' is not ours"


def test_payment_without_appid_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    resource = transaction()
    del resource["appid"]

    assert rejection(door, signed(envelope(resource), wechatpay_key)) == (
        "missing field resource.appid"
    )


def test_refund_naming_another_app_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    resource = refund(appid="wx9999999999999999")
    request = signed(envelope(resource, event_type="REFUND.SUCCESS"), wechatpay_key)

    assert rejection(door, request) == "appid 'wx9999999999999999' is not ours"


def test_refund_for_another_merchant_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    request = signed(
        envelope(refund(mchid="1900000999"), event_type="REFUND.SUCCESS"), wechatpay_key
    )

    assert rejection(door, request) == "mchid '1900000999' is not ours"


# --- malformed, in every way ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mchid", "out_trade_no", "trade_state", "transaction_id"])
def test_payment_without_a_required_field_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, name: str
) -> None:
    resource = transaction()
    del resource[name]

    assert rejection(door, signed(envelope(resource), wechatpay_key)) == (
        f"missing field resource.{name}"
    )


@pytest.mark.parametrize("name", ["out_trade_no", "refund_status"])
def test_refund_without_a_required_field_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, name: str
) -> None:
    resource = refund()
    del resource[name]
    request = signed(envelope(resource, event_type="REFUND.SUCCESS"), wechatpay_key)

    assert rejection(door, request) == f"missing field resource.{name}"


@pytest.mark.parametrize("name", ["id", "event_type", "resource_type", "resource"])
def test_envelope_without_a_required_field_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, name: str
) -> None:
    body = envelope(transaction())
    del body[name]

    assert rejection(door, signed(body, wechatpay_key)) == f"missing field {name}"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": 42}, "field id is not a string"),
        ({"id": "EV-1\u0000"}, "field id is not a plain identifier"),
        ({"id": "E" * 129}, "field id is not a plain identifier"),
        ({"event_type": ["TRANSACTION.SUCCESS"]}, "field event_type is not a string"),
        (
            {"resource_type": "plain-resource"},
            "resource_type 'plain-resource' is not encrypt-resource",
        ),
        ({"resource": "sealed"}, "resource is not a JSON object"),
    ],
)
def test_malformed_envelope_is_refused(
    door: WechatPayNotifications,
    wechatpay_key: rsa.RSAPrivateKey,
    change: dict[str, Any],
    reason: str,
) -> None:
    assert rejection(door, signed(envelope(transaction()) | change, wechatpay_key)) == reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"out_trade_no": "ord_1\u0000"}, "field resource.out_trade_no is not a plain identifier"),
        ({"out_trade_no": "ord\n1"}, "field resource.out_trade_no is not a plain identifier"),
        ({"out_trade_no": 1}, "field resource.out_trade_no is not a string"),
        ({"trade_state": {"state": "SUCCESS"}}, "field resource.trade_state is not a string"),
        ({"mchid": 1900000109}, "field resource.mchid is not a string"),
        ({"success_time": "2026-11-23 19:59:58"}, "resource.success_time is not an RFC 3339 time"),
        ({"success_time": "2026-11-23T19:59:58"}, "resource.success_time is not an RFC 3339 time"),
        (
            {"success_time": "0001-01-01T00:00:00+08:00"},
            "resource.success_time is not an RFC 3339 time",
        ),
        ({"success_time": 1764000000}, "field resource.success_time is not a string"),
        ({"amount": 2970}, "resource.amount is not a JSON object"),
        ({"amount": None}, "missing field resource.amount"),
        ({"amount": {"currency": "CNY"}}, "missing field resource.amount.total"),
        ({"amount": {"total": 2970, "currency": "USD"}}, "resource.amount is not in CNY"),
    ],
)
def test_malformed_payment_resource_is_refused(
    door: WechatPayNotifications,
    wechatpay_key: rsa.RSAPrivateKey,
    change: dict[str, Any],
    reason: str,
) -> None:
    resource = {
        name: value for name, value in (transaction() | change).items() if value is not None
    }

    assert rejection(door, signed(envelope(resource), wechatpay_key)) == reason


@pytest.mark.parametrize("total", [29.70, "2970", True, 0, -2970, 10**13, 2970.0, None, [2970]])
def test_total_must_be_a_positive_whole_number_of_fen(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, total: Any
) -> None:
    resource = transaction(amount={"total": total, "currency": "CNY"})
    expected = (
        "missing field resource.amount.total"
        if total is None
        else "resource.amount.total is not an amount in fen"
    )

    assert rejection(door, signed(envelope(resource), wechatpay_key)) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "body is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            b"{not json",
            "body is not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (b"[]", "body is not a JSON object"),
        (b"null", "body is not a JSON object"),
        (b"\xff{}", "body is not UTF-8"),
        (b'{"id": NaN}', "body is not JSON: NaN is not a JSON number"),
        (b'{"id": "a", "id": "b"}', "body is not JSON: a key is repeated"),
        (
            b'{"id": "a\x00"}',
            "body is not JSON: Invalid control character at: line 1 column 10 (char 9)",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "body is JSON nested too deeply"),
    ],
)
def test_signed_body_that_is_not_a_json_object_is_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey, raw: bytes, reason: str
) -> None:
    assert rejection(door, signed(raw, wechatpay_key)) == reason


def test_huge_numbers_are_refused(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    body = b'{"id": ' + b"9" * 5000 + b"}"
    assert rejection(door, signed(body, wechatpay_key)) == (
        "body is not JSON: a number has too many digits"
    )
    resource = transaction(amount={"total": int("9" * 40), "currency": "CNY"})
    assert rejection(door, signed(envelope(resource), wechatpay_key)) == (
        "resource.amount.total is not an amount in fen"
    )


def mutations(genuine: bytes, seed: int) -> list[bytes]:
    """`genuine` with a few bytes overwritten at random, many times over."""
    chance = random.Random(seed)
    mutated = []
    for _ in range(300):
        raw = bytearray(genuine)
        for _ in range(chance.randint(1, 8)):
            raw[chance.randrange(len(raw))] = chance.randrange(256)
        mutated.append(bytes(raw))
    return mutated


def test_no_signed_body_gets_a_crash_instead_of_a_reason(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    for raw in mutations(signed(envelope(transaction()), wechatpay_key).body, seed=20261123):
        try:
            door.verify(signed(raw, wechatpay_key), now=NOW)
        except NotificationRejected as refused:
            assert refused.reason


def test_no_sealed_resource_gets_a_crash_instead_of_a_reason(
    door: WechatPayNotifications, wechatpay_key: rsa.RSAPrivateKey
) -> None:
    for raw in mutations(json.dumps(transaction()).encode(), seed=20261124):
        try:
            door.verify(signed(envelope(raw), wechatpay_key), now=NOW)
        except NotificationRejected as refused:
            assert refused.reason


# --- the replies ----------------------------------------------------------------------------


def test_acknowledgement_is_204_with_no_body(door: WechatPayNotifications) -> None:
    assert door.acknowledgement() == CallbackReply(204, b"", None)


def test_refusal_says_fail_with_the_message(door: WechatPayNotifications) -> None:
    reply = door.refusal(400, "notification rejected: 签名错误")

    assert (reply.status_code, reply.media_type) == (400, "application/json")
    assert json.loads(reply.body) == {"code": "FAIL", "message": "notification rejected: 签名错误"}
    assert "签名错误".encode() in reply.body
