"""WeChat Pay's notifications: an event whose resource is sealed with the merchant's APIv3 key,
signed afresh on every attempt, resent on WeChat Pay's schedule until answered 200 or 204.

The body — and so the event `id` and the ciphertext — stays the same across attempts; the
signature headers do not, since merchants refuse timestamps 5 minutes old and nonces seen
before.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.china_time import rfc3339
from sandbox.notifier import DeliveryRules, Outgoing
from sandbox.wechatpay.signing import signature_headers

ResourceType = Literal["transaction", "refund"]

_MINUTE, _HOUR = 60, 3600
RULES = DeliveryRules(
    # At once, then after 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h.
    schedule=(
        0,
        15,
        15,
        30,
        3 * _MINUTE,
        10 * _MINUTE,
        20 * _MINUTE,
        30 * _MINUTE,
        30 * _MINUTE,
        30 * _MINUTE,
        _HOUR,
        3 * _HOUR,
        3 * _HOUR,
        3 * _HOUR,
        6 * _HOUR,
        6 * _HOUR,
    ),
    # Success is the status alone, 200 or 204, whatever the body says.
    acknowledged=lambda response: response.status_code in (200, 204),
)
_EVENTS: dict[ResourceType, tuple[str, str]] = {
    "transaction": ("TRANSACTION.SUCCESS", "支付成功"),
    "refund": ("REFUND.SUCCESS", "退款成功"),
}
_NONCE_ALPHABET = string.ascii_letters + string.digits


def new_event_id() -> str:
    return str(uuid.uuid4())


def event_body(
    resource: dict[str, Any],
    original_type: ResourceType,
    *,
    event_id: str,
    now: datetime,
    apiv3_key: bytes,
) -> bytes:
    """The notification body: `resource` sealed with AEAD_AES_256_GCM under the APIv3 key."""
    # 12 characters: AES-GCM's 96-bit nonce, written as text as WeChat Pay writes it.
    nonce = "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(12))
    plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
    sealed = AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, original_type.encode())
    event_type, summary = _EVENTS[original_type]
    event = {
        "id": event_id,
        "create_time": rfc3339(now),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": {
            "original_type": original_type,
            "algorithm": "AEAD_AES_256_GCM",
            # AESGCM appends the 16-byte tag to the ciphertext, as WeChat Pay sends them.
            "ciphertext": base64.b64encode(sealed).decode("ascii"),
            "associated_data": original_type,
            "nonce": nonce,
        },
    }
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def signed_anew(
    body: bytes,
    *,
    clock: Callable[[], datetime],
    private_key: rsa.RSAPrivateKey,
    key_id: str,
) -> Callable[[], Outgoing]:
    """Each attempt: the same body, signed with the time and a nonce of that attempt."""

    def attempt() -> Outgoing:
        headers = signature_headers(body, now=clock(), private_key=private_key, key_id=key_id)
        return Outgoing(content=body, headers={"Content-Type": "application/json", **headers})

    return attempt
