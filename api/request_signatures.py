"""Signed client requests: the API key proves the request without travelling with it.

A client may send, instead of `Authorization: Bearer <key>`,

    Authorization: PAYSAGA-HMAC-SHA256 key_id="<key id>",timestamp="<unix seconds>",
                   nonce="<16 to 64 of A-Z a-z 0-9 . _ ~ ->",signature="<base64>"

(one line), where the key id is the key's `key_identity` (the first 16 hex digits of its
SHA-256) and the signature is HMAC-SHA256, keyed with the API key's UTF-8 bytes, over five
lines, each ending in a newline:

    METHOD
    PATH?QUERY        the request target as sent, still percent-encoded; no `?` without a query
    TIMESTAMP
    NONCE
    SHA256HEX(BODY)   lower-case hex of the body's exact bytes (of nothing, for a GET)

A request 5 minutes or more from our clock, or one whose nonce its key used before within that
window (remembered in the database, for every API process), is refused: captured, it cannot be
sent again. Keys listed in PAYSAGA_SIGNED_KEY_IDS must sign; for the others it is a choice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

SCHEME = "PAYSAGA-HMAC-SHA256"
FRESHNESS_WINDOW = timedelta(minutes=5)
_FIELDS = ("key_id", "timestamp", "nonce", "signature")

_FIELD = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*')
_KEY_ID = re.compile(r"[0-9a-f]{16}")
# As long a Unix time as WeChat Pay's: far past any clock we will meet, never a huge number.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Long enough to be unique when random, short enough to be remembered whole.
_NONCE = re.compile(r"[A-Za-z0-9._~-]{16,64}")


class SignatureRefused(Exception):
    """A signed request that is not believed; the reason is said to the client."""


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: int
    nonce: str
    signature: bytes


def parse(credentials: str) -> SignedRequest:
    """The fields after the scheme; SignatureRefused unless each is there once, well formed."""
    fields: dict[str, str] = {}
    for part in credentials.split(","):
        match = _FIELD.fullmatch(part)
        if match is None or match[1] not in _FIELDS or match[1] in fields:
            raise SignatureRefused(
                f"{SCHEME} takes " + ",".join(f'{name}="…"' for name in _FIELDS) + ", each once"
            )
        fields[match[1]] = match[2]
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise SignatureRefused(f"{SCHEME} lacks " + ", ".join(missing))
    if _KEY_ID.fullmatch(fields["key_id"]) is None:
        raise SignatureRefused("key_id is not a key id (16 lower-case hex digits)")
    if _TIMESTAMP.fullmatch(fields["timestamp"]) is None:
        raise SignatureRefused("timestamp is not a Unix time in seconds")
    if _NONCE.fullmatch(fields["nonce"]) is None:
        raise SignatureRefused("nonce is not 16 to 64 of A-Z a-z 0-9 . _ ~ -")
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
    except (binascii.Error, ValueError) as malformed:
        raise SignatureRefused("signature is not base64") from malformed
    return SignedRequest(
        key_id=fields["key_id"],
        timestamp=int(fields["timestamp"]),
        nonce=fields["nonce"],
        signature=signature,
    )


def check(
    signed: SignedRequest, *, key: str, target: bytes, method: str, body: bytes, now: datetime
) -> None:
    """SignatureRefused unless `key` signed this request recently. The nonce is the caller's
    to check once this passes: only a proven request may take up room in the database."""
    if abs(signed.timestamp - now.timestamp()) >= FRESHNESS_WINDOW.total_seconds():
        raise SignatureRefused("timestamp is 5 minutes or more from now: sign the request anew")
    message = _signing_string(
        method=method, target=target, timestamp=signed.timestamp, nonce=signed.nonce, body=body
    )
    expected = hmac.new(key.encode(), message, hashlib.sha256).digest()
    if not secrets.compare_digest(expected, signed.signature):
        raise SignatureRefused("signature does not verify")


def _signing_string(
    *, method: str, target: bytes, timestamp: int, nonce: str, body: bytes
) -> bytes:
    head = f"{method}\n".encode() + target + f"\n{timestamp}\n{nonce}\n".encode()
    return head + hashlib.sha256(body).hexdigest().encode() + b"\n"
