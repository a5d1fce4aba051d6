"""WeChat Pay APIv3 signatures from WeChat Pay's side: it checks the `Authorization` merchants
sign their requests with, and signs what it sends them — answers and notifications alike.

A request is signed over five lines, `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n`; what
WeChat Pay sends over three, `TIMESTAMP\\nNONCE\\nBODY\\n`, each line ending in `\\n` even when the
body is empty. Bodies are signed as the raw bytes on the wire. Both are SHA256withRSA.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.signatures import sign

SCHEME = "WECHATPAY2-SHA256-RSA2048"
# WeChat Pay and merchants alike refuse a signature 5 minutes or more away from their clock.
MAX_SKEW_SECONDS = 5 * 60
_PARAMETER = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*')
_CREDENTIALS = ("mchid", "nonce_str", "timestamp", "serial_no", "signature")


@dataclass(frozen=True)
class Credentials:
    """What a merchant's `Authorization` header claims."""

    mchid: str
    nonce_str: str
    timestamp: int
    serial_no: str
    signature: str

    def message(self, method: str, target: bytes, body: bytes) -> bytes:
        """The five lines the merchant signed; `target` is the path and query as requested."""
        head = f"{method}\n".encode() + target
        return head + f"\n{self.timestamp}\n{self.nonce_str}\n".encode() + body + b"\n"


def parse_authorization(header: str) -> Credentials:
    """`WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",…`, or ValueError saying what is wrong."""
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME:
        raise ValueError(f"Authorization must use the {SCHEME} scheme")
    found: dict[str, str] = {}
    for part in rest.split(","):
        match = _PARAMETER.fullmatch(part)
        if match is None or match[1] in found:
            raise ValueError(f"Authorization has a malformed or repeated part: {part.strip()!r}")
        found[match[1]] = match[2]
    missing = [name for name in _CREDENTIALS if not found.get(name)]
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(missing)}")
    if not found["timestamp"].isdigit():
        raise ValueError("Authorization timestamp must be whole seconds since the epoch")
    return Credentials(
        mchid=found["mchid"],
        nonce_str=found["nonce_str"],
        timestamp=int(found["timestamp"]),
        serial_no=found["serial_no"],
        signature=found["signature"],
    )


def signature_headers(
    body: bytes, *, now: datetime, private_key: rsa.RSAPrivateKey, key_id: str
) -> dict[str, str]:
    """Headers that sign `body` as WeChat Pay signs answers and notifications.

    Each call takes a fresh nonce, so a resent notification is a new message to the merchant,
    who refuses nonces seen before.
    """
    timestamp = str(int(now.timestamp()))
    nonce = secrets.token_hex(16)
    message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Serial": key_id,
        "Wechatpay-Signature": sign(message, private_key),
        "Wechatpay-Signature-Type": SCHEME,
    }
