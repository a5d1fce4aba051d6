"""The sandbox's key files: its own RSA pairs standing in for Alipay's and WeChat Pay's, the
merchants' public keys, and the APIv3 key a WeChat Pay merchant shares with WeChat Pay."""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

APIV3_KEY_LENGTH = 32
# A merchant sets its APIv3 key in WeChat Pay's console as 32 letters and digits.
_APIV3_ALPHABET = string.ascii_letters + string.digits


def load_or_create_key_pair(private_path: Path, public_path: Path) -> rsa.RSAPrivateKey:
    """The private key, with a new RSA-2048 pair written on first run.

    A public key left without its private half is useless, so it is replaced along with it.
    """
    if not private_path.is_file():
        _write_key_pair(private_path, public_path)
    key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{private_path} does not hold an RSA private key")
    return key


def load_or_create_apiv3_key(path: Path) -> bytes:
    """The 32-byte APIv3 key (AES-256), made on first run; a file of another length is refused."""
    if not path.is_file():
        letters = (secrets.choice(_APIV3_ALPHABET) for _ in range(APIV3_KEY_LENGTH))
        _write_secret(path, "".join(letters).encode("ascii"))
    # Tolerate the newline an editor leaves: the key itself is printable ASCII.
    key = path.read_bytes().strip()
    if len(key) != APIV3_KEY_LENGTH:
        raise ValueError(f"{path} holds {len(key)} bytes; an APIv3 key is {APIV3_KEY_LENGTH}")
    return key


class PublicKeyFile:
    """A merchant's public key, read at first use and then kept.

    The sandbox may start before the merchant side has made its key pair, so a missing file
    is not an error until a request needs it, and it is looked for again on the next request.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._key: rsa.RSAPublicKey | None = None

    def get(self) -> rsa.RSAPublicKey | None:
        if self._key is None and self._path.is_file():
            key = serialization.load_pem_public_key(_armoured(self._path.read_bytes()))
            if not isinstance(key, rsa.RSAPublicKey):
                raise ValueError(f"{self._path} does not hold an RSA public key")
            self._key = key
        return self._key


def _armoured(data: bytes) -> bytes:
    # Alipay's console hands public keys out as bare base64, without PEM armour.
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        return text
    return b"-----BEGIN PUBLIC KEY-----\n" + text + b"\n-----END PUBLIC KEY-----\n"


def _write_key_pair(private_path: Path, public_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_secret(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_secret(path: Path, data: bytes) -> None:
    """Write a file only its owner can read: created so, never widened and then narrowed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
