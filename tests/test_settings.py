"""Configuration: dev mode runs on defaults; production refuses to start half-configured."""

from __future__ import annotations

import base64
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.api_keys import (
    accepted_admin_keys,
    accepted_api_keys,
    dev_admin_key,
    key_identity,
    matching_key,
)
from core.codec import ensure_key
from core.settings import SANDBOX_APP_ID, Settings
from core.temporal import payload_codec
from core.vocabulary import Gateway
from paysaga.cli import main

API_KEY = "psk_live_0123456789abcdef0123456789"
ADMIN_KEY = "pak_live_0123456789abcdef0123456789"


def test_dev_mode_talks_to_the_sandbox_with_its_own_keys(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, sandbox_url="http://127.0.0.1:9300")
    assert settings.gateways == (Gateway.ALIPAY, Gateway.WECHATPAY)
    alipay, wechatpay = settings.alipay, settings.wechatpay
    assert alipay is not None and wechatpay is not None
    assert alipay.gateway_url == "http://127.0.0.1:9300/gateway.do"
    assert alipay.app_id == SANDBOX_APP_ID
    assert alipay.app_private_key_file == tmp_path / "keys" / "app_private.pem"
    assert wechatpay.gateway_url == "http://127.0.0.1:9300"
    assert wechatpay.apiv3_key_file == tmp_path / "keys" / "wechatpay_apiv3.key"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'paysaga.db'}"
    assert settings.notify_url(Gateway.ALIPAY) == "http://127.0.0.1:8000/v1/callbacks/alipay"
    assert settings.notify_url(Gateway.WECHATPAY).endswith("/v1/callbacks/wechatpay")


def test_dev_mode_makes_one_api_key_and_keeps_it_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    (key,) = accepted_api_keys(settings)
    assert accepted_api_keys(settings) == (key,)
    assert settings.dev_api_key_file.stat().st_mode & 0o077 == 0
    assert matching_key(key, (key,)) == key and matching_key(key + "x", (key,)) is None
    assert key not in key_identity(key)


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({}, "PAYSAGA_ALIPAY_GATEWAY_URL"),
        ({"PAYSAGA_ALIPAY_GATEWAY_URL": "https://alipay.test"}, "PAYSAGA_ALIPAY_APP_ID"),
        (
            {
                "PAYSAGA_WECHATPAY_GATEWAY_URL": "https://wechatpay.test",
                "PAYSAGA_WECHATPAY_MCHID": "1",
            },
            "PAYSAGA_WECHATPAY_APIV3_KEY_FILE",
        ),
    ],
)
def test_production_refuses_missing_settings(
    environment: dict[str, str], complaint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYSAGA_MODE", "production")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=complaint):
        Settings()


def test_production_refuses_placeholder_api_keys(tmp_path: Path) -> None:
    keys = [tmp_path / "app.pem", tmp_path / "alipay.pem"]
    for key in keys:
        key.write_text("key")
    with pytest.raises(ValidationError, match="real PAYSAGA_API_KEYS"):
        Settings(
            mode="production",
            database_url="postgresql://db/paysaga",
            alipay_gateway_url="https://openapi.alipay.com/gateway.do",
            alipay_app_id="2021000000000001",
            alipay_app_private_key_file=keys[0],
            alipay_public_key_file=keys[1],
            api_keys="changeme",
        )


def test_the_cli_says_why_it_will_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYSAGA_MODE", "production")
    assert main(["api"]) == 2
    assert "production mode needs" in capsys.readouterr().err


def operators(tmp_path: Path) -> dict[str, object]:
    """What production needs besides a gateway: admin keys, and the payload encryption keys."""
    ensure_key(tmp_path / "codec-2026.key")
    return {
        "admin_keys": ADMIN_KEY,
        "codec_keys": f"k2026={tmp_path / 'codec-2026.key'}",
    }


def production_environment(tmp_path: Path) -> dict[str, object]:
    """A complete production configuration of WeChat Pay alone."""
    files = {name: tmp_path / name for name in ("merchant.pem", "apiv3.key", "wechatpay.pem")}
    for path in files.values():
        path.write_text("key")
    return {
        **operators(tmp_path),
        "mode": "production",
        "database_url": "postgresql://db/paysaga",
        "api_keys": API_KEY,
        "public_base_url": "https://pay.example.com",
        "wechatpay_gateway_url": "https://api.mch.weixin.qq.com",
        "wechatpay_mchid": "1900000109",
        "wechatpay_appid": "wx0123456789abcdef",
        "wechatpay_merchant_key_file": files["merchant.pem"],
        "wechatpay_merchant_serial": "0123456789ABCDEF0123456789ABCDEF01234567",
        "wechatpay_apiv3_key_file": files["apiv3.key"],
        "wechatpay_public_keys": f"PUB_KEY_ID_01 = {files['wechatpay.pem']}",
    }


def test_production_offers_only_the_configured_gateways(tmp_path: Path) -> None:
    wechatpay_only = {**production_environment(tmp_path), "default_gateway": "wechatpay"}
    settings = Settings.model_validate(wechatpay_only)
    assert settings.gateways == (Gateway.WECHATPAY,) and settings.alipay is None
    assert settings.wechatpay is not None
    assert settings.wechatpay.public_key_files == {"PUB_KEY_ID_01": tmp_path / "wechatpay.pem"}
    # The default gateway must be one of them.
    with pytest.raises(ValidationError, match="PAYSAGA_DEFAULT_GATEWAY is alipay"):
        Settings.model_validate(production_environment(tmp_path))
    with pytest.raises(ValidationError, match="'PUB_KEY_ID_1' is not an id=path pair"):
        Settings.model_validate({**wechatpay_only, "wechatpay_public_keys": "PUB_KEY_ID_1"})
    (tmp_path / "apiv3.key").unlink()
    with pytest.raises(ValidationError, match="apiv3.key does not exist"):
        Settings.model_validate(wechatpay_only)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"api_keys": "psk_live_short"}, "32 characters or more"),
        ({"public_base_url": None}, "explicit PAYSAGA_PUBLIC_BASE_URL"),
        ({"wechatpay_gateway_url": "http://api.mch.weixin.qq.com"}, "https"),
        ({"wechatpay_gateway_url": "https://sandbox.test:8300"}, "sandbox"),
    ],
)
def test_production_refuses_what_would_be_unsafe(
    tmp_path: Path, change: dict[str, object], complaint: str
) -> None:
    settings: dict[str, object] = {
        **production_environment(tmp_path),
        "default_gateway": "wechatpay",
        "sandbox_url": "https://sandbox.test:8300",
    }
    Settings.model_validate(settings)  # complete and safe: accepted
    settings.update(change)
    if change.get("public_base_url", "") is None:
        del settings["public_base_url"]
    with pytest.raises(ValidationError, match=complaint):
        Settings.model_validate(settings)


def test_production_alipay_needs_its_seller_id(tmp_path: Path) -> None:
    keys = [tmp_path / "app.pem", tmp_path / "alipay.pem"]
    for key in keys:
        key.write_text("key")
    alipay: dict[str, object] = {
        **operators(tmp_path),
        "mode": "production",
        "database_url": "postgresql://db/paysaga",
        "api_keys": API_KEY,
        "public_base_url": "https://pay.example.com",
        "alipay_gateway_url": "https://openapi.alipay.com/gateway.do",
        "alipay_app_id": "2021000000000001",
        "alipay_app_private_key_file": keys[0],
        "alipay_public_key_file": keys[1],
    }
    with pytest.raises(ValidationError, match="PAYSAGA_ALIPAY_SELLER_ID"):
        Settings.model_validate(alipay)
    assert Settings.model_validate({**alipay, "alipay_seller_id": "2088000000000042"}).alipay


def test_dev_mode_makes_an_admin_key_apart_from_the_api_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    (admin,) = accepted_admin_keys(settings)
    assert accepted_admin_keys(settings) == (admin,)
    assert admin not in accepted_api_keys(settings)
    assert settings.dev_admin_key_file.stat().st_mode & 0o077 == 0
    configured = Settings(home=tmp_path, admin_keys=f" {ADMIN_KEY} , pak_other ")
    assert accepted_admin_keys(configured) == (ADMIN_KEY, "pak_other")


def test_processes_starting_at_once_keep_the_same_dev_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    start = threading.Barrier(8)

    def made() -> str:
        start.wait()
        return dev_admin_key(settings)

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = set(pool.map(lambda _: made(), range(8)))
    assert keys == {settings.dev_admin_key_file.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["admin_key"]  # no draft left behind


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"admin_keys": None}, "real PAYSAGA_ADMIN_KEYS"),
        ({"admin_keys": "changeme"}, "real PAYSAGA_ADMIN_KEYS"),
        ({"admin_keys": "pak_live_short"}, "PAYSAGA_ADMIN_KEYS of 32 characters or more"),
        ({"admin_keys": f"{ADMIN_KEY},{API_KEY}"}, "PAYSAGA_ADMIN_KEYS may not hold a key of"),
        ({"codec_keys": None}, "production mode needs PAYSAGA_CODEC_KEYS"),
        ({"codec_keys": "k2026"}, "PAYSAGA_CODEC_KEYS: 'k2026' is not an id=path pair"),
        ({"codec_key_id": "k2025"}, "PAYSAGA_CODEC_KEY_ID is 'k2025', which PAYSAGA_CODEC_KEYS"),
        ({"codec_cors_origins": "https://ui.example.com/"}, "is not an origin"),
        ({"codec_cors_origins": "*"}, "is not an origin"),
    ],
)
def test_production_refuses_operators_keys_it_cannot_trust(
    tmp_path: Path, change: dict[str, object], complaint: str
) -> None:
    settings = {**production_environment(tmp_path), "default_gateway": "wechatpay"}
    Settings.model_validate(settings)
    for name, value in change.items():
        if value is None:
            del settings[name]
        else:
            settings[name] = value
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        Settings.model_validate(settings)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "key 'k2026': cannot read"),
        (base64.b64encode(bytes(16)).decode(), "holds 16 bytes, not a 32-byte key"),
        ("not base64!", "does not hold a key in base64"),
    ],
)
def test_production_reads_each_codec_key_before_it_starts(
    tmp_path: Path, content: str | None, complaint: str
) -> None:
    settings = {**production_environment(tmp_path), "default_gateway": "wechatpay"}
    key_file = tmp_path / "codec-2026.key"
    if content is None:
        key_file.unlink()
    else:
        key_file.write_text(content)
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        Settings.model_validate(settings)


def test_codec_keys_rotate_by_id(tmp_path: Path) -> None:
    for name in ("old.key", "new.key"):
        ensure_key(tmp_path / name)
    pairs = f"k2025={tmp_path / 'old.key'}, k2026 = {tmp_path / 'new.key'}"
    first = Settings(home=tmp_path, codec_keys=pairs)
    assert first.codec_key_files == {"k2025": tmp_path / "old.key", "k2026": tmp_path / "new.key"}
    assert first.codec_encrypting_key_id == "k2025"
    rotated = Settings(home=tmp_path, codec_keys=pairs, codec_key_id="k2026")
    assert rotated.codec_encrypting_key_id == "k2026"
    assert set(rotated.read_codec_keys()) == {"k2025", "k2026"}


def test_dev_mode_encrypts_with_a_key_of_its_own(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert settings.codec_key_files == {"dev": tmp_path / "keys" / "codec.key"}
    assert settings.codec_encrypting_key_id == "dev"
    assert not (tmp_path / "keys" / "codec.key").exists()
    payload_codec(settings)  # made on first use, by whichever process comes first
    key_file = tmp_path / "keys" / "codec.key"
    key = key_file.read_text()
    assert key_file.stat().st_mode & 0o077 == 0
    assert len(base64.b64decode(key)) == 32
    assert payload_codec(settings).key_id == "dev"
    assert key_file.read_text() == key  # kept, never made anew


def test_the_codec_server_is_open_to_the_dev_ui_only_where_configured(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).codec_cors_origin_list == (
        "http://127.0.0.1:8233",
        "http://localhost:8233",
    )
    production = Settings.model_validate(
        {**production_environment(tmp_path), "default_gateway": "wechatpay"}
    )
    assert production.codec_cors_origin_list == ()
    configured = Settings(
        home=tmp_path, codec_cors_origins="https://ui.example.com, http://10.0.0.5:8080"
    )
    assert configured.codec_cors_origin_list == ("https://ui.example.com", "http://10.0.0.5:8080")


def test_webhook_retries_need_a_wait_and_a_span_at_least_as_long(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, task_queue="orders")
    assert settings.webhook_task_queue == "orders-webhooks"
    assert (settings.webhook_retry_initial_seconds, settings.webhook_give_up_seconds) == (5, 259200)
    for wrong, complaint in (
        ({"webhook_retry_initial_seconds": 0}, "more than 0"),
        ({"webhook_relay_every_seconds": -1}, "more than 0"),
        ({"webhook_give_up_seconds": 2, "webhook_retry_initial_seconds": 3}, "at least"),
    ):
        with pytest.raises(ValidationError, match=complaint):
            Settings.model_validate({"home": tmp_path, **wrong})
