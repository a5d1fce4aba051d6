"""Standard Webhooks (https://www.standardwebhooks.com): the signing secrets and the headers of
the events paysaga sends, so that any implementation of the specification — the
`standardwebhooks` library, Svix's — verifies them.

A secret is `whsec_` and the base64 of 32 random bytes; the HMAC key is those bytes, decoded. A
delivery carries `webhook-id` (the event's id, the same on every attempt, by which a receiver
drops what it has already taken), `webhook-timestamp` (Unix seconds of this attempt: receivers
refuse one 5 minutes off) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, one per live secret, space-separated, so that while a rotated secret
overlaps the new one a receiver holding either verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
# Above the specification's 24-byte minimum: as strong as the HMAC's own key size.
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(
    signing_secrets: Sequence[str], *, event_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one delivery attempt, signed with every secret given."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    signatures = (
        "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
        for secret in signing_secrets
    )
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))
