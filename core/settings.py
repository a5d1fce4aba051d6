"""Configuration from the environment (prefix `PAYSAGA_`), checked once at start-up.

In `dev` mode (the default) everything has a working default: a SQLite file under
`PAYSAGA_HOME`, the local Temporal dev server, and the bundled sandbox gateway with key pairs
created on first run. In `production` mode the gateway, its keys and the API keys must be
given, and a missing or placeholder one stops the process before it serves anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The sandbox's own merchant app id: dev mode talks to the sandbox as this app.
SANDBOX_APP_ID = "2021000000000000"
PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "dev", "test"})


class SettingsError(ValueError):
    """The configuration cannot run: the message says which setting and why."""


@dataclass(frozen=True)
class AlipaySettings:
    gateway_url: str
    app_id: str
    app_private_key_file: Path
    alipay_public_key_file: Path
    seller_id: str | None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYSAGA_", frozen=True)

    mode: Literal["dev", "production"] = "dev"
    home: Path = Path(".paysaga")
    database_url: str | None = None
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "paysaga-orders"
    api_keys: SecretStr | None = None
    price_per_day: Decimal = Decimal("9.90")
    currency: str = "CNY"
    payment_timeout_seconds: int = 900
    payment_create_timeout_seconds: int = 20
    # How often, and after how long, recorded payments no saga decided are handed on again.
    reconcile_every_seconds: int = 300
    reconcile_after_seconds: int = 120
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"
    sandbox_url: str = "http://127.0.0.1:8300"
    alipay_gateway_url: str | None = None
    alipay_app_id: str | None = None
    alipay_app_private_key_file: Path | None = None
    alipay_public_key_file: Path | None = None
    alipay_seller_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.price_per_day <= 0 or self.price_per_day != self.price_per_day.quantize(
            Decimal("0.01")
        ):
            raise SettingsError("PAYSAGA_PRICE_PER_DAY must be a positive amount in cents")
        if self.payment_timeout_seconds < 1:
            raise SettingsError("PAYSAGA_PAYMENT_TIMEOUT_SECONDS must be at least 1")
        if self.mode == "production":
            self._check_production()
        return self

    def _check_production(self) -> None:
        missing = [
            f"PAYSAGA_{name.upper()}"
            for name in (
                "alipay_gateway_url",
                "alipay_app_id",
                "alipay_app_private_key_file",
                "alipay_public_key_file",
                "database_url",
            )
            if getattr(self, name) is None
        ]
        if missing:
            raise SettingsError("production mode needs " + ", ".join(missing))
        if not self.api_key_list or any(k.lower() in PLACEHOLDERS for k in self.api_key_list):
            raise SettingsError("production mode needs real PAYSAGA_API_KEYS (comma-separated)")
        for path in (self.alipay_app_private_key_file, self.alipay_public_key_file):
            if path is not None and not path.is_file():
                raise SettingsError(f"key file {path} does not exist")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'paysaga.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @cached_property
    def api_key_list(self) -> tuple[str, ...]:
        if self.api_keys is None:
            return ()
        return tuple(k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip())

    @property
    def dev_api_key_file(self) -> Path:
        return self.home / "api_key"

    @property
    def notify_url(self) -> str:
        return self.public_base_url.rstrip("/") + "/v1/callbacks/alipay"

    @property
    def alipay(self) -> AlipaySettings:
        """The gateway to talk to: the configured Alipay, or the bundled sandbox in dev mode."""
        if self.alipay_gateway_url is not None:
            if self.alipay_app_id is None or self.alipay_app_private_key_file is None:
                raise SettingsError("PAYSAGA_ALIPAY_GATEWAY_URL needs the app id and private key")
            if self.alipay_public_key_file is None:
                raise SettingsError("the Alipay gateway needs PAYSAGA_ALIPAY_PUBLIC_KEY_FILE")
            return AlipaySettings(
                gateway_url=self.alipay_gateway_url,
                app_id=self.alipay_app_id,
                app_private_key_file=self.alipay_app_private_key_file,
                alipay_public_key_file=self.alipay_public_key_file,
                seller_id=self.alipay_seller_id,
            )
        return AlipaySettings(
            gateway_url=self.sandbox_url.rstrip("/") + "/gateway.do",
            app_id=self.alipay_app_id or SANDBOX_APP_ID,
            app_private_key_file=self.keys_dir / "app_private.pem",
            alipay_public_key_file=self.keys_dir / "sandbox_public.pem",
            seller_id=self.alipay_seller_id,
        )
