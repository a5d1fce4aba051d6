"""Every payload paysaga hands Temporal is encrypted (AES-256-GCM) before it leaves the process.

Workflow and activity inputs and results, signals, updates, queries, memos, summaries and
failure messages hold amounts, reservations and QR codes: Temporal's store, its Web UI and
anyone who can read its history see ciphertext only. Search attributes are not payloads a codec
sees (Temporal indexes them in clear): they carry ids and statuses, nothing personal.

An encrypted payload is `nonce (12 bytes) || ciphertext || tag` of the whole original payload
(its metadata too), with the metadata `encoding: binary/encrypted` and `encryption-key-id: <id>`;
the key id is authenticated with it. Keys rotate without breaking old histories: one key
encrypts, every known one decrypts, found by the id each payload names. A payload that is not
encrypted (written before this codec) is read as it is; one that names an unknown key or fails
its tag is an error, never read as anything.

The same keys seal secrets paysaga keeps at rest (webhook signing secrets): `seal` and
`unseal`, with the key id kept beside the sealed bytes and the secret bound to what it belongs to,
so that a database dump reveals none of them and a sealed value copied to another row does not
open.

A key file holds one 32-byte key in base64 (`openssl rand -base64 32`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.secret_files import kept_secret

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_BYTES = 32
# GCM's own nonce size; random nonces of it are safe for far more payloads than one key sees.
NONCE_BYTES = 12


class CodecError(ValueError):
    """A payload that cannot be decrypted, or a key that cannot be used: the message says why."""


@dataclass(frozen=True)
class Sealed:
    """Bytes sealed at rest: `nonce || ciphertext || tag`, and the id of the key that sealed
    them."""

    key_id: str
    data: bytes


class EncryptionCodec(PayloadCodec):
    """Encrypts with the key `encrypt_with` names; decrypts with whichever key a payload names."""

    def __init__(self, keys: Mapping[str, bytes], *, encrypt_with: str) -> None:
        if encrypt_with not in keys:
            raise CodecError(f"no key {encrypt_with!r} to encrypt with among {sorted(keys)}")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise CodecError(f"key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.key_id = encrypt_with

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encrypted = []
        for payload in payloads:
            sealed = self.seal(payload.SerializeToString(), context=b"")
            encrypted.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: sealed.key_id.encode()},
                    data=sealed.data,
                )
            )
        return encrypted

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypted(payload) for payload in payloads]

    def _decrypted(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        return Payload.FromString(self.unseal(Sealed(key_id, payload.data), context=b""))

    def seal(self, plaintext: bytes, *, context: bytes) -> Sealed:
        """`plaintext` encrypted under the encrypting key and bound to `context` (what it belongs
        to): it opens only with the same context."""
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.key_id]
        return Sealed(
            self.key_id, nonce + cipher.encrypt(nonce, plaintext, self.key_id.encode() + context)
        )

    def unseal(self, sealed: Sealed, *, context: bytes) -> bytes:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise CodecError(
                f"a payload encrypted with key {sealed.key_id!r}, which is not among the known "
                f"keys {sorted(self._ciphers)}"
            )
        nonce, data = sealed.data[:NONCE_BYTES], sealed.data[NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, data, sealed.key_id.encode() + context)
        except InvalidTag:
            raise CodecError(
                f"a payload under key {sealed.key_id!r} fails its authentication: altered, "
                "encrypted with another key of that id, or moved from where it belongs"
            ) from None


def read_key(path: Path) -> bytes:
    """The key in a key file; CodecError if it cannot be read or is not 32 bytes in base64."""
    try:
        text = path.read_text().strip()
    except OSError as failure:
        raise CodecError(f"cannot read {path}: {failure.strerror}") from failure
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise CodecError(f"{path} does not hold a key in base64") from None
    if len(key) != KEY_BYTES:
        raise CodecError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
    return key


def ensure_key(path: Path) -> None:
    """A new random key in `path`, unless it holds one already (the dev mode's own key)."""
    kept_secret(path, lambda: base64.b64encode(os.urandom(KEY_BYTES)).decode())
