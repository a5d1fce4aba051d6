"""verify_notification against notifications signed the way Alipay signs them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateways import alipay_signing
from gateways.alipay_notification import REQUIRED_FIELDS, AlipayNotification, verify_notification
from gateways.errors import NotificationRejected

APP_ID = "2021000000000001"
SELLER_ID = "2088000000000001"


@pytest.fixture(scope="module")
def alipay_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def payment(**changes: str) -> dict[str, str]:
    """A face-to-face payment notification's fields, unsigned."""
    fields = {
        "notify_time": "2024-01-02 00:30:06",
        "notify_type": "trade_status_sync",
        "notify_id": "2024010200222003006012345678",
        "app_id": APP_ID,
        "auth_app_id": APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": "2024010222001412345678",
        "out_trade_no": "o-1",
        "buyer_id": "2088102177846880",
        "seller_id": SELLER_ID,
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "29.70",
        "receipt_amount": "29.70",
        "subject": "场地预订",
        "gmt_create": "2024-01-02 00:29:58",
        "gmt_payment": "2024-01-02 00:30:05",
        "fund_bill_list": '[{"amount":"29.70","fundChannel":"ALIPAYACCOUNT"}]',
    }
    return fields | changes


def signed(fields: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    message = alipay_signing.signing_string(fields, unsigned=alipay_signing.NOTIFICATION_UNSIGNED)
    return fields | {"sign_type": "RSA2", "sign": alipay_signing.sign(message, key)}


def verify(
    params: dict[str, str], key: rsa.RSAPrivateKey, seller_id: str | None = None
) -> AlipayNotification:
    return verify_notification(
        params, alipay_public_key=key.public_key(), app_id=APP_ID, seller_id=seller_id
    )


def rejection(params: dict[str, str], key: rsa.RSAPrivateKey, seller_id: str | None = None) -> str:
    with pytest.raises(NotificationRejected) as caught:
        verify(params, key, seller_id)
    return caught.value.reason


# --- authenticity ---------------------------------------------------------------------------


def test_rsa2_payment_notification_verifies(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(), alipay_key)

    notification = verify(params, alipay_key, seller_id=SELLER_ID)

    assert notification == AlipayNotification(
        notify_id="2024010200222003006012345678",
        notify_type="trade_status_sync",
        app_id=APP_ID,
        out_trade_no="o-1",
        trade_no="2024010222001412345678",
        trade_status="TRADE_SUCCESS",
        total_amount=Decimal("29.70"),
        refund_fee=None,
        out_biz_no=None,
        gmt_payment=datetime(2024, 1, 1, 16, 30, 5, tzinfo=UTC),
        gmt_refund=None,
        seller_id=SELLER_ID,
        params=params,
    )
    assert isinstance(notification.total_amount, Decimal)
    assert notification.is_payment
    assert not notification.is_refund


@pytest.mark.parametrize(
    ("name", "value"), [("total_amount", "2970.00"), ("trade_status", "TRADE_FINISHED")]
)
def test_tampered_value_does_not_verify(
    alipay_key: rsa.RSAPrivateKey, name: str, value: str
) -> None:
    params = signed(payment(), alipay_key) | {name: value}

    assert rejection(params, alipay_key) == "signature does not verify"


def test_added_field_does_not_verify(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(), alipay_key) | {"refund_fee": "29.70"}

    assert rejection(params, alipay_key) == "signature does not verify"


def test_signature_by_another_key_does_not_verify(alipay_key: rsa.RSAPrivateKey) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=1024)

    assert rejection(signed(payment(), stranger), alipay_key) == "signature does not verify"


def test_sha1_rsa_is_refused_even_when_genuine(alipay_key: rsa.RSAPrivateKey) -> None:
    fields = payment()
    message = alipay_signing.signing_string(fields, unsigned=alipay_signing.NOTIFICATION_UNSIGNED)
    sha1 = alipay_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA1())
    params = fields | {"sign_type": "RSA", "sign": base64.b64encode(sha1).decode()}

    assert rejection(params, alipay_key) == "sign_type 'RSA' is not accepted, RSA2 only"
    # Relabelled RSA2, the SHA-1 signature still fails: the label does not choose the hash.
    assert rejection(params | {"sign_type": "RSA2"}, alipay_key) == "signature does not verify"


@pytest.mark.parametrize("sign_type", ["MD5", "rsa2", "RSA2 "])
def test_other_sign_types_are_refused(alipay_key: rsa.RSAPrivateKey, sign_type: str) -> None:
    params = signed(payment(), alipay_key) | {"sign_type": sign_type}

    assert rejection(params, alipay_key) == f"sign_type {sign_type!r} is not accepted, RSA2 only"


@pytest.mark.parametrize("name", ["sign", "sign_type"])
def test_missing_signature_is_refused(alipay_key: rsa.RSAPrivateKey, name: str) -> None:
    params = signed(payment(), alipay_key)
    del params[name]

    assert rejection(params, alipay_key) == f"missing field {name}"


def test_empty_values_and_sign_type_are_left_out_of_the_signed_text(
    alipay_key: rsa.RSAPrivateKey,
) -> None:
    # Written out by hand, as Alipay documents it: sorted, raw values, empty `body` and
    # `passback_params` and the `sign_type` dropped.
    signed_text = (
        f"app_id={APP_ID}&notify_id=n-1&notify_type=trade_status_sync&out_trade_no=o-1"
        "&subject=场地 预订&total_amount=29.70&trade_no=t-1&trade_status=TRADE_SUCCESS"
    )
    params = {
        "trade_status": "TRADE_SUCCESS",
        "app_id": APP_ID,
        "body": "",
        "notify_id": "n-1",
        "notify_type": "trade_status_sync",
        "out_trade_no": "o-1",
        "passback_params": "",
        "subject": "场地 预订",
        "total_amount": "29.70",
        "trade_no": "t-1",
        "sign_type": "RSA2",
        "sign": alipay_signing.sign(signed_text, alipay_key),
    }

    assert verify(params, alipay_key).notify_id == "n-1"


# --- ours? ----------------------------------------------------------------------------------


def test_notification_for_another_app_is_refused(alipay_key: rsa.RSAPrivateKey) -> None:
    # auth_app_id naming us does not make another app's trade ours.
    params = signed(payment(app_id="2021000000000999", auth_app_id=APP_ID), alipay_key)

    assert rejection(params, alipay_key) == "app_id '2021000000000999' is not ours"


def test_notification_for_another_seller_is_refused(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(seller_id="2088000000000999"), alipay_key)

    assert rejection(params, alipay_key, SELLER_ID) == "seller_id '2088000000000999' is not ours"
    assert verify(params, alipay_key).seller_id == "2088000000000999"


@pytest.mark.parametrize("name", REQUIRED_FIELDS)
def test_notification_without_a_required_field_is_refused(
    alipay_key: rsa.RSAPrivateKey, name: str
) -> None:
    fields = payment()
    del fields[name]

    assert rejection(signed(fields, alipay_key), alipay_key) == f"missing field {name}"


@pytest.mark.parametrize("value", ["29.7x", "29.701", "-29.70", "1e3", " 29.70", "NaN", "٢٩.٧٠"])
def test_total_amount_must_be_a_yuan_amount(alipay_key: rsa.RSAPrivateKey, value: str) -> None:
    params = signed(payment(total_amount=value), alipay_key)

    assert rejection(params, alipay_key) == f"total_amount {value!r} is not an amount"


def test_refund_fee_must_be_a_yuan_amount(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(refund_fee="ten"), alipay_key)

    assert rejection(params, alipay_key) == "refund_fee 'ten' is not an amount"


def test_payment_time_must_be_an_alipay_time(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(gmt_payment="2024-01-02T00:30:05Z"), alipay_key)

    assert rejection(params, alipay_key) == "gmt_payment '2024-01-02T00:30:05Z' is not a time"


# --- what it is about -----------------------------------------------------------------------


def test_partial_refund_is_a_refund_not_a_payment(alipay_key: rsa.RSAPrivateKey) -> None:
    # Alipay gives gmt_refund with milliseconds.
    params = signed(
        payment(refund_fee="10.00", gmt_refund="2024-01-03 09:15:00.631", out_biz_no="o-1-r1"),
        alipay_key,
    )

    notification = verify(params, alipay_key)

    assert notification.trade_status == "TRADE_SUCCESS"
    assert notification.is_refund
    assert not notification.is_payment
    assert notification.refund_fee == Decimal("10.00")
    assert notification.out_biz_no == "o-1-r1"
    assert notification.gmt_refund == datetime(2024, 1, 3, 1, 15, 0, 631000, tzinfo=UTC)


def test_full_refund_comes_as_trade_closed_with_refund_fee(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(
        payment(
            trade_status="TRADE_CLOSED",
            refund_fee="29.70",
            gmt_refund="2024-01-03 09:15:00.631",
            gmt_close="2024-01-03 09:15:00",
        ),
        alipay_key,
    )

    notification = verify(params, alipay_key)

    assert notification.is_refund
    assert not notification.is_payment


@pytest.mark.parametrize(
    ("refund_field", "value"),
    [("refund_fee", "1.00"), ("gmt_refund", "2024-01-03 09:15:00"), ("out_biz_no", "r-1")],
)
def test_any_refund_field_makes_it_a_refund(
    alipay_key: rsa.RSAPrivateKey, refund_field: str, value: str
) -> None:
    notification = verify(signed(payment(**{refund_field: value}), alipay_key), alipay_key)

    assert notification.is_refund


def test_empty_or_zero_refund_fields_do_not_make_a_refund(alipay_key: rsa.RSAPrivateKey) -> None:
    params = signed(payment(refund_fee="0.00", gmt_refund="", out_biz_no=""), alipay_key)

    notification = verify(params, alipay_key)

    assert not notification.is_refund
    assert notification.is_payment


def test_trade_finished_is_a_payment(alipay_key: rsa.RSAPrivateKey) -> None:
    notification = verify(signed(payment(trade_status="TRADE_FINISHED"), alipay_key), alipay_key)

    assert notification.is_payment
    assert not notification.is_refund


@pytest.mark.parametrize("status", ["WAIT_BUYER_PAY", "TRADE_CLOSED"])
def test_unpaid_states_are_not_payments(alipay_key: rsa.RSAPrivateKey, status: str) -> None:
    notification = verify(signed(payment(trade_status=status), alipay_key), alipay_key)

    assert not notification.is_payment
    assert not notification.is_refund
