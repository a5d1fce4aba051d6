"""WECHATPAY2-SHA256-RSA2048 and AEAD_AES_256_GCM, checked against messages written out by hand
and signatures and ciphertexts made here with `cryptography` itself."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateways import wechatpay_signing

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
KEY_ID = "PUB_KEY_ID_0119000001092026112300000000000001"
CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
APIV3_KEY = b"0123456789abcdefghijABCDEFGHIJ01"


@pytest.fixture(scope="module")
def wechatpay_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def platform_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_sha256(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def signed_headers(
    key: rsa.RSAPrivateKey,
    body: bytes,
    *,
    serial: str = KEY_ID,
    timestamp: int = STAMP,
    nonce: str = "c5ac7061fccab6bf3e254dcf98995b8c",
) -> dict[str, str]:
    """The headers WeChat Pay signs `body` with, written from the protocol."""
    return {
        "wechatpay-timestamp": str(timestamp),
        "wechatpay-nonce": nonce,
        "wechatpay-serial": serial,
        "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
        "wechatpay-signature": rsa_sha256(key, f"{timestamp}\n{nonce}\n".encode() + body + b"\n"),
    }


def check(
    headers: Mapping[str, str], body: bytes, keys: Mapping[str, rsa.RSAPublicKey], *, now: datetime
) -> None:
    wechatpay_signing.check_signature(headers, body, public_keys=keys, now=now)


def refusal(
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, rsa.RSAPublicKey],
    *,
    now: datetime = NOW,
) -> str:
    with pytest.raises(ValueError) as caught:
        check(headers, body, keys, now=now)
    return str(caught.value)


# --- our requests ---------------------------------------------------------------------------


def test_request_message_is_five_lines_each_ending_in_a_newline() -> None:
    body = b'{"mchid":"1900000109"}'

    message = wechatpay_signing.request_message(
        method="POST",
        url="/v3/pay/transactions/out-trade-no/o-1/close",
        timestamp=1554208460,
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
        body=body,
    )

    assert message == (
        b"POST\n/v3/pay/transactions/out-trade-no/o-1/close\n1554208460\n"
        b'593BEC0C930BF1AFEB40B4A08C8FB242\n{"mchid":"1900000109"}\n'
    )


def test_a_get_signs_its_query_and_an_empty_body() -> None:
    message = wechatpay_signing.request_message(
        method="GET",
        url="/v3/pay/transactions/out-trade-no/o-1?mchid=1900000109",
        timestamp=1554208460,
        nonce="N",
        body=b"",
    )

    assert (
        message == b"GET\n/v3/pay/transactions/out-trade-no/o-1?mchid=1900000109\n1554208460\nN\n\n"
    )


def test_authorization_header_carries_a_signature_wechat_pay_can_verify(
    merchant_key: rsa.RSAPrivateKey,
) -> None:
    body = '{"description":"场地预订"}'.encode()

    header = wechatpay_signing.authorization(
        mchid="1900000109",
        serial_no="0123456789ABCDEF0123456789ABCDEF01234567",
        private_key=merchant_key,
        method="POST",
        url="/v3/pay/transactions/native",
        body=body,
        timestamp=1554208460,
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
    )

    shape = re.fullmatch(
        r'WECHATPAY2-SHA256-RSA2048 mchid="1900000109",'
        r'nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",'
        r'timestamp="1554208460",serial_no="0123456789ABCDEF0123456789ABCDEF01234567",'
        r'signature="([A-Za-z0-9+/=]+)"',
        header,
    )
    assert shape is not None, header
    signed = b"POST\n/v3/pay/transactions/native\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n"
    merchant_key.public_key().verify(
        base64.b64decode(shape.group(1)), signed + body + b"\n", padding.PKCS1v15(), hashes.SHA256()
    )


def test_nonces_are_fresh_32_character_strings() -> None:
    nonces = {wechatpay_signing.new_nonce() for _ in range(100)}

    assert len(nonces) == 100
    assert all(re.fullmatch(r"[0-9A-F]{32}", nonce) for nonce in nonces)


# --- WeChat Pay's signatures ----------------------------------------------------------------


def test_signed_message_keeps_the_body_bytes_as_they_came() -> None:
    # Not UTF-8, and not what json.dumps would write: the bytes are signed, not a re-encoding.
    body = b'{"a" : "\xe5\x9c\xba", "b":\t"\xff"}'

    assert wechatpay_signing.signed_message(timestamp="1", nonce="n", body=body) == (
        b"1\nn\n" + body + b"\n"
    )


def test_an_empty_answer_leaves_a_lone_newline_for_its_body() -> None:
    assert wechatpay_signing.signed_message(timestamp="1", nonce="n", body=b"") == b"1\nn\n\n"


def test_genuine_signature_verifies(wechatpay_key: rsa.RSAPrivateKey) -> None:
    body = b'{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}'

    check(signed_headers(wechatpay_key, body), body, {KEY_ID: wechatpay_key.public_key()}, now=NOW)


def test_raw_bytes_that_are_not_utf8_verify_as_signed(wechatpay_key: rsa.RSAPrivateKey) -> None:
    body = b"\xff\xfe{}"

    check(signed_headers(wechatpay_key, body), body, {KEY_ID: wechatpay_key.public_key()}, now=NOW)


def test_an_empty_204_answer_verifies(wechatpay_key: rsa.RSAPrivateKey) -> None:
    check(signed_headers(wechatpay_key, b""), b"", {KEY_ID: wechatpay_key.public_key()}, now=NOW)


def test_header_names_are_matched_in_any_case(wechatpay_key: rsa.RSAPrivateKey) -> None:
    body = b"{}"
    headers = httpx.Headers(
        {name.title(): value for name, value in signed_headers(wechatpay_key, body).items()}
    )

    check(headers, body, {KEY_ID: wechatpay_key.public_key()}, now=NOW)


@pytest.mark.parametrize(
    "tampered",
    [b'{"code_url":"weixin://wxpay/bizpayurl?pr=EVIL"}', b'{"code_url": "weixin://wxpay/x"}', b""],
)
def test_tampered_body_does_not_verify(wechatpay_key: rsa.RSAPrivateKey, tampered: bytes) -> None:
    headers = signed_headers(wechatpay_key, b'{"code_url":"weixin://wxpay/x"}')

    assert refusal(headers, tampered, {KEY_ID: wechatpay_key.public_key()}) == (
        "signature does not verify"
    )


@pytest.mark.parametrize(
    ("header", "value"), [("wechatpay-timestamp", str(STAMP + 1)), ("wechatpay-nonce", "other")]
)
def test_tampered_signed_header_does_not_verify(
    wechatpay_key: rsa.RSAPrivateKey, header: str, value: str
) -> None:
    headers = signed_headers(wechatpay_key, b"{}") | {header: value}

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        "signature does not verify"
    )


def test_signature_by_another_key_does_not_verify(wechatpay_key: rsa.RSAPrivateKey) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert refusal(signed_headers(forger, b"{}"), b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        "signature does not verify"
    )


def test_the_serial_chooses_the_key_among_those_live(
    wechatpay_key: rsa.RSAPrivateKey, platform_key: rsa.RSAPrivateKey
) -> None:
    # While WeChat Pay moves from a platform certificate to a public key, both sign.
    keys = {KEY_ID: wechatpay_key.public_key(), CERT_SERIAL: platform_key.public_key()}

    check(signed_headers(wechatpay_key, b"{}"), b"{}", keys, now=NOW)
    check(signed_headers(platform_key, b"{}", serial=CERT_SERIAL), b"{}", keys, now=NOW)
    # A genuine signature under the other key's name does not verify.
    assert refusal(signed_headers(platform_key, b"{}"), b"{}", keys) == "signature does not verify"


def test_unknown_serial_is_refused(wechatpay_key: rsa.RSAPrivateKey) -> None:
    headers = signed_headers(wechatpay_key, b"{}", serial="PUB_KEY_ID_UNKNOWN")

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        "wechatpay-serial 'PUB_KEY_ID_UNKNOWN' names no key of ours"
    )


def test_wechat_pay_probe_is_refused(wechatpay_key: rsa.RSAPrivateKey) -> None:
    headers = signed_headers(wechatpay_key, b"{}")
    headers["wechatpay-signature"] = "WECHATPAY/SIGNTEST/" + headers["wechatpay-signature"]

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        "signature is WeChat Pay's probe, which must fail"
    )


def test_verify_never_accepts_a_probe(wechatpay_key: rsa.RSAPrivateKey) -> None:
    public_key = wechatpay_key.public_key()
    genuine = rsa_sha256(wechatpay_key, b"message")

    assert wechatpay_signing.verify(b"message", genuine, public_key)
    assert not wechatpay_signing.verify(b"message", "WECHATPAY/SIGNTEST/" + genuine, public_key)


@pytest.mark.parametrize("signature", ["not base64!", "QUJD", "", "５５５５"])
def test_garbage_signatures_do_not_verify(wechatpay_key: rsa.RSAPrivateKey, signature: str) -> None:
    assert not wechatpay_signing.verify(b"message", signature, wechatpay_key.public_key())


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [
        (timedelta(seconds=-299), True),
        (timedelta(seconds=299), True),
        (timedelta(minutes=-5), False),
        (timedelta(minutes=5), False),
        (timedelta(hours=-1), False),
        (timedelta(hours=1), False),
    ],
)
def test_timestamps_5_minutes_or_more_away_are_refused(
    wechatpay_key: rsa.RSAPrivateKey, offset: timedelta, fresh: bool
) -> None:
    # `offset` is how far the timestamp lies from now: stale when negative, future when positive.
    headers = signed_headers(wechatpay_key, b"{}")
    keys = {KEY_ID: wechatpay_key.public_key()}
    now = NOW - offset

    if fresh:
        check(headers, b"{}", keys, now=now)
    else:
        assert refusal(headers, b"{}", keys, now=now) == (
            f"wechatpay-timestamp {STAMP} is 5 minutes or more from now"
        )


@pytest.mark.parametrize("timestamp", ["-1", "1e9", " 1764", "1764.0", "9" * 13, "١٧٦٤"])
def test_timestamp_must_be_unix_seconds(wechatpay_key: rsa.RSAPrivateKey, timestamp: str) -> None:
    headers = signed_headers(wechatpay_key, b"{}") | {"wechatpay-timestamp": timestamp}

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        f"wechatpay-timestamp {timestamp!r} is not a Unix time"
    )


@pytest.mark.parametrize("nonce", ["a b", "a\tb", "a" * 65, "nonce\u00e9"])
def test_nonce_must_be_printable_ascii(wechatpay_key: rsa.RSAPrivateKey, nonce: str) -> None:
    headers = signed_headers(wechatpay_key, b"{}", nonce=nonce)

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        "wechatpay-nonce is not printable ASCII"
    )


@pytest.mark.parametrize(
    "header",
    ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"],
)
def test_missing_signature_header_is_refused(wechatpay_key: rsa.RSAPrivateKey, header: str) -> None:
    headers = signed_headers(wechatpay_key, b"{}")
    del headers[header]

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        f"missing header {header}"
    )


def test_signature_type_may_be_left_out(wechatpay_key: rsa.RSAPrivateKey) -> None:
    headers = signed_headers(wechatpay_key, b"{}")
    del headers["wechatpay-signature-type"]

    check(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}, now=NOW)


@pytest.mark.parametrize("scheme", ["WECHATPAY2-SM2-WITH-SM3", "wechatpay2-sha256-rsa2048", ""])
def test_other_signature_types_are_refused(wechatpay_key: rsa.RSAPrivateKey, scheme: str) -> None:
    headers = signed_headers(wechatpay_key, b"{}") | {"wechatpay-signature-type": scheme}

    assert refusal(headers, b"{}", {KEY_ID: wechatpay_key.public_key()}) == (
        f"wechatpay-signature-type {scheme!r} is not WECHATPAY2-SHA256-RSA2048"
    )


# --- sealed resources -----------------------------------------------------------------------


def seal(plaintext: bytes, *, key: bytes = APIV3_KEY, nonce: bytes, associated_data: bytes) -> str:
    return base64.b64encode(AESGCM(key).encrypt(nonce, plaintext, associated_data)).decode()


def test_resource_decrypts_with_the_apiv3_key() -> None:
    plaintext = '{"out_trade_no":"o-1","trade_state":"SUCCESS","description":"场地"}'.encode()
    sealed = seal(plaintext, nonce=b"fdasflkja484", associated_data=b"transaction")

    assert (
        wechatpay_signing.decrypt_resource(
            apiv3_key=APIV3_KEY,
            nonce="fdasflkja484",
            ciphertext=sealed,
            associated_data="transaction",
        )
        == plaintext
    )


def test_resource_sealed_without_associated_data_decrypts() -> None:
    sealed = seal(b"{}", nonce=b"fdasflkja484", associated_data=b"")

    assert (
        wechatpay_signing.decrypt_resource(
            apiv3_key=APIV3_KEY, nonce="fdasflkja484", ciphertext=sealed, associated_data=""
        )
        == b"{}"
    )


def decryption_failure(
    *, ciphertext: str, nonce: str = "fdasflkja484", associated_data: str = "transaction"
) -> str:
    with pytest.raises(ValueError) as caught:
        wechatpay_signing.decrypt_resource(
            apiv3_key=APIV3_KEY, nonce=nonce, ciphertext=ciphertext, associated_data=associated_data
        )
    return str(caught.value)


def test_resource_sealed_with_another_key_does_not_decrypt() -> None:
    sealed = seal(b"{}", key=bytes(32), nonce=b"fdasflkja484", associated_data=b"transaction")

    assert decryption_failure(ciphertext=sealed) == (
        "ciphertext does not decrypt with our APIv3 key"
    )


def test_tampered_ciphertext_or_associated_data_does_not_decrypt() -> None:
    sealed = bytearray(
        base64.b64decode(seal(b'{"total":100}', nonce=b"fdasflkja484", associated_data=b"tx"))
    )
    flipped = bytes(sealed[:1]) + bytes([sealed[1] ^ 1]) + bytes(sealed[2:])

    assert decryption_failure(
        ciphertext=base64.b64encode(flipped).decode(), associated_data="tx"
    ) == ("ciphertext does not decrypt with our APIv3 key")
    assert decryption_failure(
        ciphertext=base64.b64encode(bytes(sealed)).decode(), associated_data="refund"
    ) == ("ciphertext does not decrypt with our APIv3 key")


@pytest.mark.parametrize("nonce", ["short", "fdasflkja4841", "", "fdasflkja48é"])
def test_nonce_must_be_12_bytes(nonce: str) -> None:
    sealed = seal(b"{}", nonce=b"fdasflkja484", associated_data=b"transaction")

    assert re.fullmatch(
        r"nonce is \d+ bytes, not 12", decryption_failure(ciphertext=sealed, nonce=nonce)
    )


@pytest.mark.parametrize("ciphertext", ["%%%", "QUJD\n", "ＱＵＪＤ"])
def test_ciphertext_must_be_base64(ciphertext: str) -> None:
    assert decryption_failure(ciphertext=ciphertext) == "ciphertext is not base64"


def test_ciphertext_shorter_than_its_tag_is_refused() -> None:
    assert decryption_failure(ciphertext=base64.b64encode(b"short").decode()) == (
        "ciphertext is shorter than its tag"
    )


def test_unencodable_associated_data_is_refused() -> None:
    sealed = seal(b"{}", nonce=b"fdasflkja484", associated_data=b"transaction")

    assert decryption_failure(ciphertext=sealed, associated_data="\ud800") == (
        "associated_data is not valid text"
    )


# --- the APIv3 key file ---------------------------------------------------------------------


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_apiv3_key_file_holds_32_bytes_and_maybe_a_newline(tmp_path: Path, ending: bytes) -> None:
    path = tmp_path / "apiv3.key"
    path.write_bytes(APIV3_KEY + ending)

    assert wechatpay_signing.load_apiv3_key(path) == APIV3_KEY


@pytest.mark.parametrize(
    ("content", "length"),
    [(APIV3_KEY[:31], 31), (APIV3_KEY + b"x", 33), (APIV3_KEY + b"\n\n", 33), (b"", 0)],
)
def test_apiv3_key_of_another_length_is_refused(
    tmp_path: Path, content: bytes, length: int
) -> None:
    path = tmp_path / "apiv3.key"
    path.write_bytes(content)

    with pytest.raises(ValueError) as caught:
        wechatpay_signing.load_apiv3_key(path)

    assert str(caught.value) == (
        f"{path} holds {length} bytes; a WeChat Pay APIv3 key is exactly 32"
    )
    # The message names the file, never the key.
    assert APIV3_KEY.decode() not in str(caught.value)
