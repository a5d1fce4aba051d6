"""Configuration from the environment (prefix `PAYSAGA_`), checked once at start-up.

In `dev` mode (the default) everything has a working default: a SQLite file under
`PAYSAGA_HOME`, the local Temporal dev server, and the bundled sandbox for each gateway that is
not configured, with keys (the gateways', an API key, an admin key, the payload encryption key)
created on first run. In `production` mode at least one gateway, its keys, the API keys, the
admin keys and the payload encryption keys must be given; a missing or placeholder one stops the
process before it serves anything, and a gateway left unconfigured there is simply not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.codec import CodecError, read_key
from core.vocabulary import Gateway

# The sandbox's own merchants: dev mode talks to the sandbox as these. They match the
# sandbox's defaults, and `paysaga dev` hands them to it explicitly as well.
SANDBOX_APP_ID = "2021000000000000"
SANDBOX_WECHATPAY_MCHID = "1900000109"
SANDBOX_WECHATPAY_APPID = "wx8888888888888888"
SANDBOX_WECHATPAY_MERCHANT_SERIAL = "0123456789ABCDEF0123456789ABCDEF01234567"
SANDBOX_WECHATPAY_PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092026112300000000000001"
# Long enough that guessing one is hopeless (about 190 bits as URL-safe base64).
MIN_API_KEY_CHARS = 32
PLACEHOLDERS = frozenset({"", "changeme", "change-me", "secret", "dev", "test"})
# The dev mode's own payload encryption key, in `HOME/keys`.
DEV_CODEC_KEY_ID = "dev"
DEV_CODEC_KEY_FILE = "codec.key"


class SettingsError(ValueError):
    """The configuration cannot run: the message says which setting and why."""


@dataclass(frozen=True)
class AlipaySettings:
    gateway_url: str
    app_id: str
    app_private_key_file: Path
    alipay_public_key_file: Path
    seller_id: str | None


@dataclass(frozen=True)
class WechatPaySettings:
    gateway_url: str
    mchid: str
    appid: str
    merchant_key_file: Path
    merchant_serial: str
    apiv3_key_file: Path
    # WeChat Pay's keys by the id its signatures name (`Wechatpay-Serial`): a public key id
    # or a platform certificate serial; during a switch the old and the new are both live.
    public_key_files: dict[str, Path]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYSAGA_", frozen=True)

    mode: Literal["dev", "production"] = "dev"
    home: Path = Path(".paysaga")
    database_url: str | None = None
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "paysaga-orders"
    api_keys: SecretStr | None = None
    # Operators' keys (comma-separated): the admin routes and the codec server. Never a client's.
    admin_keys: SecretStr | None = None
    # Temporal payload encryption: comma-separated `id=path` pairs, each file one 32-byte key in
    # base64. The key `codec_key_id` names (default: the first listed) encrypts; all decrypt.
    codec_keys: str | None = None
    codec_key_id: str | None = None
    # The Temporal Web UI's origins (comma-separated), whose pages may call the codec server;
    # in dev mode, by default, those of the UI `paysaga dev` serves on `temporal_ui_port`.
    codec_cors_origins: str | None = None
    temporal_ui_port: int = 8233
    price_per_day: Decimal = Decimal("9.90")
    currency: str = "CNY"
    payment_timeout_seconds: int = 900
    payment_create_timeout_seconds: int = 20
    # A deferred order's quote (price shown, no QR code yet) stands this long; pressing Pay
    # after it is refused with the current price.
    quote_ttl_seconds: int = 1800
    # An unpaid order's saga refunds a late payment itself, keeping the order's story in one
    # place, for this long after its deadline: both gateways stop re-sending a notification
    # within 25 hours (Alipay 8 times over about 25 h, WeChat Pay 15 times over about 24 h).
    late_payment_horizon_seconds: int = 90000
    # How far past the first deadline operators may extend a pending order's deadline: the
    # trade's own expiry at the gateway is set this much later.
    deadline_extension_seconds: int = 3600
    # Webhooks: a failed delivery is tried again after this many seconds, each wait twice the one
    # before (an hour at most), until this long after its first attempt (3 days); decided
    # events are handed to their delivery workflows (task queue `<TASK_QUEUE>-webhooks`) this
    # often.
    webhook_retry_initial_seconds: float = 5
    webhook_give_up_seconds: int = 259200
    webhook_relay_every_seconds: float = 1
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
    wechatpay_gateway_url: str | None = None
    wechatpay_mchid: str | None = None
    wechatpay_appid: str | None = None
    wechatpay_merchant_key_file: Path | None = None
    wechatpay_merchant_serial: str | None = None
    wechatpay_apiv3_key_file: Path | None = None
    # Comma-separated `id=path` pairs.
    wechatpay_public_keys: str | None = None
    default_gateway: Gateway = Gateway.ALIPAY
    # The callback door. Comma-separated CIDRs each gateway's callbacks may come from (unset:
    # anywhere), and the proxies trusted to say, in X-Forwarded-For, whom a request came from.
    alipay_callback_sources: str | None = None
    wechatpay_callback_sources: str | None = None
    trusted_proxies: str | None = None
    # The client door. Requests each API key may make per window; over it, 429.
    rate_limit_requests: int = 600
    rate_limit_window_seconds: int = 60
    # Key ids (`key_identity`, not the keys) whose requests must be signed (HMAC), comma-separated.
    signed_key_ids: str | None = None
    # A gateway whose calls fail more than this share of the time over the window, with at least
    # this many calls, takes no new orders until a probe call gets through.
    breaker_failure_ratio: Decimal = Decimal("0.5")
    breaker_window_seconds: int = 5
    breaker_min_calls: int = 10
    breaker_probe_seconds: int = 5
    # A secured Temporal cluster or Temporal Cloud: TLS (a CA to trust, a client certificate and
    # key for mutual TLS) and an API key.
    temporal_tls: bool = False
    temporal_tls_ca_file: Path | None = None
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_api_key: SecretStr | None = None
    # Log lines: `json` (one object per line, for a log pipeline) or `text` (for people);
    # unset: json in production mode, text in dev.
    log_format: Literal["json", "text"] | None = None
    # Where the worker serves the Temporal SDK's metrics for Prometheus (`host:port`, path
    # /metrics); empty: not served. Two workers on one machine need two ports.
    worker_metrics_address: str = "127.0.0.1:9464"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.price_per_day <= 0 or self.price_per_day != self.price_per_day.quantize(
            Decimal("0.01")
        ):
            raise SettingsError("PAYSAGA_PRICE_PER_DAY must be a positive amount in cents")
        if self.payment_timeout_seconds < 1:
            raise SettingsError("PAYSAGA_PAYMENT_TIMEOUT_SECONDS must be at least 1")
        if self.quote_ttl_seconds < 1:
            raise SettingsError("PAYSAGA_QUOTE_TTL_SECONDS must be at least 1")
        if self.webhook_retry_initial_seconds <= 0 or self.webhook_relay_every_seconds <= 0:
            raise SettingsError(
                "PAYSAGA_WEBHOOK_RETRY_INITIAL_SECONDS and PAYSAGA_WEBHOOK_RELAY_EVERY_SECONDS "
                "must be more than 0"
            )
        if self.webhook_give_up_seconds < self.webhook_retry_initial_seconds:
            raise SettingsError(
                "PAYSAGA_WEBHOOK_GIVE_UP_SECONDS must be at least "
                "PAYSAGA_WEBHOOK_RETRY_INITIAL_SECONDS"
            )
        if set(self.admin_key_list) & set(self.api_key_list):
            raise SettingsError("PAYSAGA_ADMIN_KEYS may not hold a key of PAYSAGA_API_KEYS")
        # Read now, so that pairs that are not `id=path` stop the process before it starts.
        codec_key_ids = self.codec_key_files.keys()
        if self.codec_key_id is not None and self.codec_key_id not in codec_key_ids:
            raise SettingsError(
                f"PAYSAGA_CODEC_KEY_ID is {self.codec_key_id!r}, which PAYSAGA_CODEC_KEYS "
                "does not list"
            )
        for origin in self.codec_cors_origin_list:
            _check_origin(origin)
        if self.mode == "production":
            self._check_production()
        return self

    def _check_production(self) -> None:
        if not self.gateways:
            raise SettingsError(
                "production mode needs a gateway: PAYSAGA_ALIPAY_GATEWAY_URL and its settings, "
                "or PAYSAGA_WECHATPAY_GATEWAY_URL and its settings"
            )
        if self.default_gateway not in self.gateways:
            raise SettingsError(
                f"PAYSAGA_DEFAULT_GATEWAY is {self.default_gateway}, which is not configured"
            )
        if self.database_url is None:
            raise SettingsError("production mode needs PAYSAGA_DATABASE_URL")
        _check_keys("PAYSAGA_API_KEYS", self.api_key_list)
        if "public_base_url" not in self.model_fields_set:
            # The gateways' notify_url is built from it: a default would send them nowhere.
            raise SettingsError("production mode needs an explicit PAYSAGA_PUBLIC_BASE_URL")
        for name, url in self._gateway_urls():
            if urlsplit(url).scheme != "https":
                raise SettingsError(f"production mode needs an https {name}, not {url}")
            if url.rstrip("/").startswith(self.sandbox_url.rstrip("/")):
                raise SettingsError(f"production mode may not use the sandbox as {name}")
        if self.alipay is not None and self.alipay.seller_id is None:
            # Notifications are checked against it: without it, any seller's trade would do.
            raise SettingsError("production mode needs PAYSAGA_ALIPAY_SELLER_ID with Alipay")
        for path in self._key_files():
            if not path.is_file():
                raise SettingsError(f"key file {path} does not exist")
        _check_keys("PAYSAGA_ADMIN_KEYS", self.admin_key_list)
        if self.codec_keys is None:
            raise SettingsError(
                "production mode needs PAYSAGA_CODEC_KEYS (id=path pairs, each file a 32-byte "
                "key in base64): Temporal payloads are encrypted"
            )
        self.read_codec_keys()

    def _gateway_urls(self) -> list[tuple[str, str]]:
        urls = []
        if (alipay := self.alipay) is not None:
            urls.append(("PAYSAGA_ALIPAY_GATEWAY_URL", alipay.gateway_url))
        if (wechatpay := self.wechatpay) is not None:
            urls.append(("PAYSAGA_WECHATPAY_GATEWAY_URL", wechatpay.gateway_url))
        return urls

    def _key_files(self) -> list[Path]:
        files = []
        if (alipay := self.alipay) is not None:
            files += [alipay.app_private_key_file, alipay.alipay_public_key_file]
        if (wechatpay := self.wechatpay) is not None:
            files += [wechatpay.merchant_key_file, wechatpay.apiv3_key_file]
            files += wechatpay.public_key_files.values()
        return files

    @property
    def resolved_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.mode == "production" else "text"

    @property
    def webhook_task_queue(self) -> str:
        """Deliveries' own task queue: a slow or unreachable receiver holds up no saga."""
        return f"{self.task_queue}-webhooks"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'paysaga.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @cached_property
    def api_key_list(self) -> tuple[str, ...]:
        return _listed(self.api_keys)

    @property
    def dev_api_key_file(self) -> Path:
        return self.home / "api_key"

    @cached_property
    def admin_key_list(self) -> tuple[str, ...]:
        return _listed(self.admin_keys)

    @property
    def dev_admin_key_file(self) -> Path:
        return self.home / "admin_key"

    @cached_property
    def codec_key_files(self) -> dict[str, Path]:
        """The payload encryption keys by id: PAYSAGA_CODEC_KEYS, else the dev mode's own."""
        if self.codec_keys is not None:
            return _key_ids("PAYSAGA_CODEC_KEYS", self.codec_keys)
        if self.mode == "production":
            return {}
        return {DEV_CODEC_KEY_ID: self.keys_dir / DEV_CODEC_KEY_FILE}

    def read_codec_keys(self) -> dict[str, bytes]:
        """The payload encryption keys by id; SettingsError, naming the key, for one unusable."""
        keys = {}
        for key_id, path in self.codec_key_files.items():
            try:
                keys[key_id] = read_key(path)
            except CodecError as unusable:
                raise SettingsError(f"PAYSAGA_CODEC_KEYS: key {key_id!r}: {unusable}") from None
        return keys

    @property
    def codec_encrypting_key_id(self) -> str:
        """The key that encrypts new payloads: PAYSAGA_CODEC_KEY_ID, else the first listed."""
        return self.codec_key_id or next(iter(self.codec_key_files))

    @cached_property
    def codec_cors_origin_list(self) -> tuple[str, ...]:
        if self.codec_cors_origins is None:
            if self.mode == "production":
                return ()
            return tuple(
                f"http://{host}:{self.temporal_ui_port}" for host in ("127.0.0.1", "localhost")
            )
        listed = (origin.strip() for origin in self.codec_cors_origins.split(","))
        return tuple(origin for origin in listed if origin)

    def notify_url(self, gateway: Gateway) -> str:
        return f"{self.public_base_url.rstrip('/')}/v1/callbacks/{gateway}"

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """The gateways orders may use: the configured ones, and in dev mode all the others too,
        through the sandbox."""
        offered = {Gateway.ALIPAY: self.alipay, Gateway.WECHATPAY: self.wechatpay}
        return tuple(gateway for gateway, settings in offered.items() if settings is not None)

    @property
    def alipay(self) -> AlipaySettings | None:
        """The configured Alipay, else the sandbox's Alipay half in dev mode, else None."""
        if self.alipay_gateway_url is not None:
            _require(
                "PAYSAGA_ALIPAY_GATEWAY_URL",
                PAYSAGA_ALIPAY_APP_ID=self.alipay_app_id,
                PAYSAGA_ALIPAY_APP_PRIVATE_KEY_FILE=self.alipay_app_private_key_file,
                PAYSAGA_ALIPAY_PUBLIC_KEY_FILE=self.alipay_public_key_file,
            )
            assert self.alipay_app_id and self.alipay_app_private_key_file
            assert self.alipay_public_key_file
            return AlipaySettings(
                gateway_url=self.alipay_gateway_url,
                app_id=self.alipay_app_id,
                app_private_key_file=self.alipay_app_private_key_file,
                alipay_public_key_file=self.alipay_public_key_file,
                seller_id=self.alipay_seller_id,
            )
        if self.mode == "production":
            return None
        return AlipaySettings(
            gateway_url=self.sandbox_url.rstrip("/") + "/gateway.do",
            app_id=self.alipay_app_id or SANDBOX_APP_ID,
            app_private_key_file=self.keys_dir / "app_private.pem",
            alipay_public_key_file=self.keys_dir / "sandbox_public.pem",
            seller_id=self.alipay_seller_id,
        )

    @property
    def wechatpay(self) -> WechatPaySettings | None:
        """The configured WeChat Pay, else the sandbox's WeChat Pay half in dev mode, else None."""
        if self.wechatpay_gateway_url is not None:
            _require(
                "PAYSAGA_WECHATPAY_GATEWAY_URL",
                PAYSAGA_WECHATPAY_MCHID=self.wechatpay_mchid,
                PAYSAGA_WECHATPAY_APPID=self.wechatpay_appid,
                PAYSAGA_WECHATPAY_MERCHANT_KEY_FILE=self.wechatpay_merchant_key_file,
                PAYSAGA_WECHATPAY_MERCHANT_SERIAL=self.wechatpay_merchant_serial,
                PAYSAGA_WECHATPAY_APIV3_KEY_FILE=self.wechatpay_apiv3_key_file,
                PAYSAGA_WECHATPAY_PUBLIC_KEYS=self.wechatpay_public_keys,
            )
            assert self.wechatpay_mchid and self.wechatpay_appid
            assert self.wechatpay_merchant_key_file and self.wechatpay_merchant_serial
            assert self.wechatpay_apiv3_key_file and self.wechatpay_public_keys
            return WechatPaySettings(
                gateway_url=self.wechatpay_gateway_url,
                mchid=self.wechatpay_mchid,
                appid=self.wechatpay_appid,
                merchant_key_file=self.wechatpay_merchant_key_file,
                merchant_serial=self.wechatpay_merchant_serial,
                apiv3_key_file=self.wechatpay_apiv3_key_file,
                public_key_files=_key_ids(
                    "PAYSAGA_WECHATPAY_PUBLIC_KEYS", self.wechatpay_public_keys
                ),
            )
        if self.mode == "production":
            return None
        return WechatPaySettings(
            gateway_url=self.sandbox_url.rstrip("/"),
            mchid=self.wechatpay_mchid or SANDBOX_WECHATPAY_MCHID,
            appid=self.wechatpay_appid or SANDBOX_WECHATPAY_APPID,
            merchant_key_file=self.keys_dir / "wechatpay_merchant_private.pem",
            merchant_serial=SANDBOX_WECHATPAY_MERCHANT_SERIAL,
            apiv3_key_file=self.keys_dir / "wechatpay_apiv3.key",
            public_key_files={
                SANDBOX_WECHATPAY_PUBLIC_KEY_ID: self.keys_dir / "wechatpay_platform_public.pem"
            },
        )


def _require(configured: str, **needed: object) -> None:
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise SettingsError(f"{configured} needs " + ", ".join(missing))


def _key_ids(setting: str, pairs: str) -> dict[str, Path]:
    keys = {}
    for pair in pairs.split(","):
        key_id, separator, path = pair.strip().partition("=")
        if not separator or not key_id.strip() or not path.strip():
            raise SettingsError(f"{setting}: {pair.strip()!r} is not an id=path pair")
        keys[key_id.strip()] = Path(path.strip())
    return keys


def _listed(keys: SecretStr | None) -> tuple[str, ...]:
    if keys is None:
        return ()
    return tuple(k.strip() for k in keys.get_secret_value().split(",") if k.strip())


def _check_keys(setting: str, keys: tuple[str, ...]) -> None:
    """Production keys: given, no placeholder, and too long to guess."""
    if not keys or any(key.lower() in PLACEHOLDERS for key in keys):
        raise SettingsError(f"production mode needs real {setting} (comma-separated)")
    if any(len(key) < MIN_API_KEY_CHARS for key in keys):
        raise SettingsError(
            f"production mode needs {setting} of {MIN_API_KEY_CHARS} characters or more"
        )


def _check_origin(origin: str) -> None:
    """A browser's Origin is exactly `scheme://host[:port]`: anything else would never match."""
    parts = urlsplit(origin)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or origin.endswith("/")
        or (parts.path or parts.query or parts.fragment)
    ):
        raise SettingsError(
            f"PAYSAGA_CODEC_CORS_ORIGINS: {origin!r} is not an origin such as "
            "https://temporal-ui.example.com (scheme, host and port only)"
        )
