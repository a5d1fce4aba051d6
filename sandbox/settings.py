"""Configuration of the sandbox gateway from the environment (prefix `PAYSAGA_SANDBOX_`).

Key files the sandbox stands behind (its own "Alipay" and "WeChat Pay" pairs, the APIv3 key) are
made on first run when missing; the merchants' public keys are read when a request needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KEYS = Path(".paysaga/keys")


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYSAGA_SANDBOX_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8300, ge=0, le=65535)
    # Base of the QR code URLs handed to merchants: what a buyer's phone would open.
    # Left unset, it follows host and port.
    public_url: str = "http://127.0.0.1:8300"
    # Gateways resend notifications over about a day; tests and demos shrink that schedule.
    notify_retry_scale: float = Field(default=0.01, ge=0)

    # Alipay: the one merchant app the sandbox serves, and the public key its requests are
    # signed with.
    app_id: str = "2021000000000000"
    app_public_key_file: Path = KEYS / "app_public.pem"
    # The sandbox's own "Alipay" key pair.
    private_key_file: Path = KEYS / "sandbox_private.pem"
    public_key_file: Path = KEYS / "sandbox_public.pem"
    seller_id: str = "2088000000000000"

    # WeChat Pay: the one merchant, its app, and the key its requests are signed with, known
    # by its certificate serial.
    wechatpay_mchid: str = "1900000109"
    wechatpay_appid: str = "wx8888888888888888"
    wechatpay_merchant_serial: str = "0123456789ABCDEF0123456789ABCDEF01234567"
    wechatpay_merchant_public_key_file: Path = KEYS / "wechatpay_merchant_public.pem"
    # The sandbox's "WeChat Pay public key" pair, and the id its signatures name it by.
    wechatpay_private_key_file: Path = KEYS / "wechatpay_platform_private.pem"
    wechatpay_public_key_file: Path = KEYS / "wechatpay_platform_public.pem"
    wechatpay_public_key_id: str = "PUB_KEY_ID_0119000001092026112300000000000001"
    # The 32-byte key notifications are encrypted with, shared with the merchant.
    wechatpay_apiv3_key_file: Path = KEYS / "wechatpay_apiv3.key"
    # How long an accepted refund stays PROCESSING before it succeeds. WeChat Pay takes
    # minutes for a refund to the buyer's balance; the sandbox, by default, a moment.
    wechatpay_refund_seconds: float = Field(default=0.2, ge=0)

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

    @property
    def code_url_base(self) -> str:
        """Where WeChat Pay code_urls point: `{public_url}/wxpay/bizpayurl?pr=…`."""
        return self.public_url.rstrip("/") + "/wxpay/bizpayurl"
