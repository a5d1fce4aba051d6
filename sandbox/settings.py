"""Configuration of the sandbox gateway from the environment (prefix `PAYSAGA_SANDBOX_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paysaga.settings import SANDBOX_APP_ID


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYSAGA_SANDBOX_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8300, ge=0, le=65535)
    # Base of the QR code URLs handed to merchants: what a buyer's phone would open.
    # Left unset, it follows host and port.
    public_url: str = "http://127.0.0.1:8300"
    # The one merchant app the sandbox serves, and the public key its requests are signed with.
    app_id: str = SANDBOX_APP_ID
    app_public_key_file: Path = Path(".paysaga/keys/app_public.pem")
    # The sandbox's own "Alipay" key pair: created on first run when missing.
    private_key_file: Path = Path(".paysaga/keys/sandbox_private.pem")
    public_key_file: Path = Path(".paysaga/keys/sandbox_public.pem")
    seller_id: str = "2088000000000000"
    # Alipay retries notifications over 25 hours; tests and demos shrink that schedule.
    notify_retry_scale: float = Field(default=0.01, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _public_url_follows_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and "public_url" not in data:
            host = data.get("host", "127.0.0.1")
            port = data.get("port", 8300)
            return {**data, "public_url": f"http://{host}:{port}"}
        return data

    @property
    def qr_base_url(self) -> str:
        return self.public_url.rstrip("/") + "/qr"
