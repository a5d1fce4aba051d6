"""WeChat Pay APIv3 signatures (WECHATPAY2-SHA256-RSA2048) and resource decryption: the one
place that knows how WeChat Pay signs, verifies and seals.

Our requests are signed with the merchant's API key over five lines, each ending in a newline:
method, URL, timestamp, nonce, body; the signature travels in `Authorization`. WeChat Pay signs
its answers and notifications with its own key over three such lines: timestamp, nonce, body;
`Wechatpay-Serial` names the key. Notification resources are sealed with AEAD_AES_256_GCM under
the merchant's APIv3 key.

PEM keys are read with `gateways.alipay_signing.load_private_key` and `load_public_key`: the
formats are the same (PKCS#8 private keys, SubjectPublicKeyInfo public keys).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateways.gateway import FRESHNESS_WINDOW

SCHEME = "WECHATPAY2-SHA256-RSA2048"
# WeChat Pay sends a few answers and notifications with a deliberately wrong signature under
# this prefix, to catch merchants who do not verify: such a signature never verifies.
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
APIV3_KEY_BYTES = 32
# AEAD_AES_256_GCM as WeChat Pay uses it: a 12-byte nonce and a 16-byte tag after the ciphertext.
RESOURCE_NONCE_BYTES = 12
TAG_BYTES = 16

# The headers WeChat Pay signs its answers and notifications with (lower case: HTTP header names
# are case-insensitive, and paysaga's callback route hands them over in lower case).
TIMESTAMP_HEADER = "wechatpay-timestamp"
NONCE_HEADER = "wechatpay-nonce"
SIGNATURE_HEADER = "wechatpay-signature"
SERIAL_HEADER = "wechatpay-serial"
SIGNATURE_TYPE_HEADER = "wechatpay-signature-type"
SIGNED_HEADERS = (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER, SERIAL_HEADER)

# Unix seconds in ASCII digits; twelve digits reach far past any clock we will meet, and the
# cap keeps a forged header from growing into a huge number.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Visible ASCII only: a nonce with a line break could move text between the signed lines. Short
# enough to be remembered whole for the replay check.
_NONCE = re.compile(r"[!-~]{1,64}")


def request_message(*, method: str, url: str, timestamp: int, nonce: str, body: bytes) -> bytes:
    """What a request's signature covers; `url` is the path with its query, as sent.

    The body is the exact bytes sent (empty for a GET), never a re-serialisation.
    """
    head = f"{method}\n{url}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def signed_message(*, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What WeChat Pay's signature on an answer or a notification covers.

    Built from the body's raw bytes: decoding and re-encoding could change them. An empty body
    (204 No Content) leaves the last line a lone newline.
    """
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(message: bytes, private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(message: bytes, signature_b64: str, public_key: rsa.RSAPublicKey) -> bool:
    """SHA256withRSA (PKCS#1 v1.5) over `message`; WeChat Pay's probes never verify."""
    if signature_b64.startswith(PROBE_PREFIX):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


def authorization(
    *,
    mchid: str,
    serial_no: str,
    private_key: rsa.RSAPrivateKey,
    method: str,
    url: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> str:
    """The `Authorization` header of one request; `serial_no` names the merchant's key."""
    message = request_message(method=method, url=url, timestamp=timestamp, nonce=nonce, body=body)
    fields = {
        "mchid": mchid,
        "nonce_str": nonce,
        "timestamp": str(timestamp),
        "serial_no": serial_no,
        "signature": sign(message, private_key),
    }
    return SCHEME + " " + ",".join(f'{name}="{value}"' for name, value in fields.items())


def check_signature(
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_keys: Mapping[str, rsa.RSAPublicKey],
    now: datetime,
) -> None:
    """Raise ValueError, with a short reason, unless WeChat Pay signed `body` recently.

    `headers` is looked up by lower-case name. The key is the one `Wechatpay-Serial` names:
    a WeChat Pay public key id (`PUB_KEY_ID_…`) or a platform certificate serial, several of
    which can be live at once while WeChat Pay moves from one to the next.
    """
    for name in SIGNED_HEADERS:
        if not headers.get(name):
            raise ValueError(f"missing header {name}")
    signature_type = headers.get(SIGNATURE_TYPE_HEADER)
    if signature_type is not None and signature_type != SCHEME:
        raise ValueError(f"{SIGNATURE_TYPE_HEADER} {signature_type!r} is not {SCHEME}")
    signature = headers[SIGNATURE_HEADER]
    if signature.startswith(PROBE_PREFIX):
        raise ValueError("signature is WeChat Pay's probe, which must fail")
    serial = headers[SERIAL_HEADER]
    public_key = public_keys.get(serial)
    if public_key is None:
        raise ValueError(f"{SERIAL_HEADER} {serial!r} names no key of ours")
    timestamp = headers[TIMESTAMP_HEADER]
    if _TIMESTAMP.fullmatch(timestamp) is None:
        raise ValueError(f"{TIMESTAMP_HEADER} {timestamp!r} is not a Unix time")
    # As WeChat Pay's official Go SDK does: 5 minutes or more away, in either direction, is
    # refused. A replay is refused here once the nonce it repeats may have been forgotten.
    if abs(int(timestamp) - now.timestamp()) >= FRESHNESS_WINDOW.total_seconds():
        raise ValueError(f"{TIMESTAMP_HEADER} {timestamp} is 5 minutes or more from now")
    nonce = headers[NONCE_HEADER]
    if _NONCE.fullmatch(nonce) is None:
        raise ValueError(f"{NONCE_HEADER} is not printable ASCII")
    message = signed_message(timestamp=timestamp, nonce=nonce, body=body)
    if not verify(message, signature, public_key):
        raise ValueError("signature does not verify")


def decrypt_resource(
    *, apiv3_key: bytes, nonce: str, ciphertext: str, associated_data: str
) -> bytes:
    """A sealed resource's plaintext; ValueError if it is malformed or was not sealed with
    `apiv3_key` (the tag, over `associated_data` too, does not match)."""
    nonce_bytes = _utf8(nonce, "nonce")
    if len(nonce_bytes) != RESOURCE_NONCE_BYTES:
        raise ValueError(f"nonce is {len(nonce_bytes)} bytes, not {RESOURCE_NONCE_BYTES}")
    try:
        sealed = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError) as malformed:
        raise ValueError("ciphertext is not base64") from malformed
    if len(sealed) < TAG_BYTES:
        raise ValueError("ciphertext is shorter than its tag")
    aad = _utf8(associated_data, "associated_data")
    try:
        return AESGCM(apiv3_key).decrypt(nonce_bytes, sealed, aad)
    except InvalidTag as forged:
        raise ValueError("ciphertext does not decrypt with our APIv3 key") from forged


def _utf8(text: str, name: str) -> bytes:
    # JSON can spell lone surrogates ("\ud800"), which have no UTF-8 form.
    try:
        return text.encode()
    except UnicodeEncodeError as unencodable:
        raise ValueError(f"{name} is not valid text") from unencodable


def load_apiv3_key(path: Path) -> bytes:
    """The APIv3 key the merchant set at WeChat Pay: a file holding exactly its 32 bytes.

    One trailing newline, as editors leave it, is not part of the key.
    """
    key = path.read_bytes()
    for newline in (b"\r\n", b"\n"):
        if key.endswith(newline):
            key = key[: -len(newline)]
            break
    if len(key) != APIV3_KEY_BYTES:
        raise ValueError(
            f"{path} holds {len(key)} bytes; a WeChat Pay APIv3 key is exactly {APIV3_KEY_BYTES}"
        )
    return key
