"""Keys callers send as `Authorization: Bearer …`: clients' API keys, and operators' admin keys.

Production takes them from PAYSAGA_API_KEYS and PAYSAGA_ADMIN_KEYS, which share no key. The
embedded dev mode makes one of each on first start, keeps it in a file only its owner can read,
and prints it, so a developer can call the API and its admin doors.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from pathlib import Path

from core.secret_files import kept_secret
from core.settings import Settings


def accepted_api_keys(settings: Settings) -> tuple[str, ...]:
    return _accepted(settings, settings.api_key_list, dev_api_key)


def accepted_admin_keys(settings: Settings) -> tuple[str, ...]:
    return _accepted(settings, settings.admin_key_list, dev_admin_key)


def dev_api_key(settings: Settings) -> str:
    return _dev_key(settings.dev_api_key_file, "psk_dev_")


def dev_admin_key(settings: Settings) -> str:
    return _dev_key(settings.dev_admin_key_file, "pak_dev_")


def _accepted(
    settings: Settings, configured: tuple[str, ...], dev_key: Callable[[Settings], str]
) -> tuple[str, ...]:
    if configured or settings.mode == "production":
        return configured
    return (dev_key(settings),)


def _dev_key(path: Path, prefix: str) -> str:
    return kept_secret(path, lambda: prefix + secrets.token_urlsafe(24))


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
