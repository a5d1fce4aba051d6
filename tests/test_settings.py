"""Configuration: dev mode runs on defaults; production refuses to start half-configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from paysaga.api_keys import accepted_api_keys, key_identity, matching_key
from paysaga.cli import main
from paysaga.settings import SANDBOX_APP_ID, Settings


def test_dev_mode_talks_to_the_sandbox_with_its_own_keys(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, sandbox_url="http://127.0.0.1:9300")
    assert settings.alipay.gateway_url == "http://127.0.0.1:9300/gateway.do"
    assert settings.alipay.app_id == SANDBOX_APP_ID
    assert settings.alipay.app_private_key_file == tmp_path / "keys" / "app_private.pem"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'paysaga.db'}"
    assert settings.notify_url == "http://127.0.0.1:8000/v1/callbacks/alipay"


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
        ({"PAYSAGA_API_KEYS": "changeme"}, "PAYSAGA_ALIPAY_APP_ID"),
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
