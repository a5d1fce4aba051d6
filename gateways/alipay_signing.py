"""Alipay OpenAPI RSA2 signatures: the one place that knows how Alipay signs and verifies.

Both sides of the wire use it: our client signs requests and verifies responses and
notifications; the sandbox gateway verifies requests and signs responses and notifications.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Requests are signed over every parameter but `sign`; notifications also leave out
# `sign_type` (Alipay's notification verification rule).
REQUEST_UNSIGNED = frozenset({"sign"})
NOTIFICATION_UNSIGNED = frozenset({"sign", "sign_type"})


def signing_string(params: Mapping[str, str], *, unsigned: Collection[str]) -> str:
    """The `k=v&k=v` string Alipay signs: sorted keys, raw values, empty values left out."""
    return "&".join(
        f"{key}={value}"
        for key, value in sorted(params.items())
        if key not in unsigned and value != ""
    )


def sign(message: str, private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(message: str, signature_b64: str, public_key: rsa.RSAPublicKey) -> bool:
    """SHA256withRSA only: Alipay's SDKs also accept SHA-1 `RSA`, which we refuse."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(signature, message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def sign_params(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """A request's parameters with their `sign` added."""
    signed = dict(params)
    signed["sign"] = sign(signing_string(params, unsigned=REQUEST_UNSIGNED), private_key)
    return signed


def response_node_text(body: str, node: str) -> str | None:
    """The exact text of `node`'s JSON object in a response body, as Alipay signed it.

    Alipay signs the characters of the `*_response` object as they stand in the body, so it
    must be cut out of the text, not re-serialised from a parsed value.
    """
    decoder = json.JSONDecoder()
    key = json.dumps(node)
    start = 0
    while (at := body.find(key, start)) != -1:
        rest = at + len(key)
        while rest < len(body) and body[rest] in " \t\r\n":
            rest += 1
        if rest < len(body) and body[rest] == ":":
            value_at = rest + 1
            while value_at < len(body) and body[value_at] in " \t\r\n":
                value_at += 1
            try:
                value, end = decoder.raw_decode(body, value_at)
            except json.JSONDecodeError:
                return None
            return body[value_at:end] if isinstance(value, dict) else None
        start = rest
    return None


def response_node_name(method: str) -> str:
    return method.replace(".", "_") + "_response"


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(_pem(path.read_bytes(), "PRIVATE KEY"), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return key


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(_pem(path.read_bytes(), "PUBLIC KEY"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} does not hold an RSA public key")
    return key


def _pem(data: bytes, label: str) -> bytes:
    # Alipay's console hands keys out as bare base64 without PEM armour; accept both.
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        return text
    armour = label.encode()
    return b"-----BEGIN " + armour + b"-----\n" + text + b"\n-----END " + armour + b"-----\n"


def generate_key_pair(private_path: Path, public_path: Path) -> None:
    """Write a new RSA-2048 key pair as PEM files, the private one readable by its owner only."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600, exist_ok=True)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
