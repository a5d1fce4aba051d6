"""The sandbox's key material: its own "Alipay" key pair and the merchant app's public key."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from gateways.alipay_signing import generate_key_pair, load_private_key, load_public_key


def load_or_create_private_key(private_path: Path, public_path: Path) -> rsa.RSAPrivateKey:
    """The sandbox's private key, with a new pair written on first run.

    A public key left without its private half is useless, so it is replaced along with it.
    """
    if not private_path.is_file():
        generate_key_pair(private_path, public_path)
    return load_private_key(private_path)


class AppPublicKey:
    """The merchant's public key, read at first use and then kept.

    The sandbox may start before the merchant side has made its key pair, so a missing file
    is not an error until a request needs it, and it is looked for again on the next request.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._key: rsa.RSAPublicKey | None = None

    def get(self) -> rsa.RSAPublicKey | None:
        if self._key is None and self._path.is_file():
            self._key = load_public_key(self._path)
        return self._key
