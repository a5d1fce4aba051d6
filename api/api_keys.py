"""API keys clients send as `Authorization: Bearer …`.

Production takes them from PAYSAGA_API_KEYS. The embedded dev mode makes one on first start,
keeps it in a file only its owner can read, and prints it, so a developer can call the API.
"""

from __future__ import annotations

import hashlib
import secrets

from core.settings import Settings


def accepted_api_keys(settings: Settings) -> tuple[str, ...]:
    if settings.api_key_list or settings.mode == "production":
        return settings.api_key_list
    return (dev_api_key(settings),)


def dev_api_key(settings: Settings) -> str:
    path = settings.dev_api_key_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("psk_dev_" + secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def matching_key(offered: str, accepted: tuple[str, ...]) -> str | None:
    """The accepted key equal to `offered`, compared in constant time against every key."""
    found = None
    for key in accepted:
        if secrets.compare_digest(offered.encode(), key.encode()):
            found = key
    return found


def key_identity(key: str) -> str:
    """A stable, non-secret name for a key: scopes Idempotency-Keys to their client."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]
