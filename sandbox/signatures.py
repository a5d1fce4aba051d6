"""SHA256withRSA (PKCS#1 v1.5, base64): the signature both gateways use, each over its own
message — Alipay over sorted parameters, WeChat Pay over lines of the HTTP exchange."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def sign(message: bytes, private_key: rsa.RSAPrivateKey) -> str:
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(message: bytes, signature: str, public_key: rsa.RSAPublicKey) -> bool:
    """Whether `signature` (base64) is the key's SHA256withRSA over `message`; nothing weaker."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
