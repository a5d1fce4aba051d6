"""Notifications as each gateway signs them, built from the protocol alone, for tests and
benchmarks that deliver a notification themselves (one the gateway lost, forged, or replayed,
or a flood of them)."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.settings import (
    SANDBOX_APP_ID,
    SANDBOX_WECHATPAY_APPID,
    SANDBOX_WECHATPAY_MCHID,
    SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
)
from core.vocabulary import Gateway
from gateways.alipay_signing import load_private_key


@dataclass(frozen=True)
class Callback:
    headers: dict[str, str]
    body: bytes


def alipay_callback(key: rsa.RSAPrivateKey, **fields: str) -> Callback:
    """A `trade_status_sync` form signed with `key` (RSA2 over the sorted, non-empty fields
    but `sign` and `sign_type`)."""
    params = {
        "notify_time": "2026-11-23 20:00:00",
        "notify_type": "trade_status_sync",
        "notify_id": uuid.uuid4().hex,
        "app_id": SANDBOX_APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "trade_no": "2026112322001400000000000001",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "29.70",
        "gmt_payment": "2026-11-23 19:59:59",
        **fields,
    }
    signed = "&".join(
        f"{name}={value}"
        for name, value in sorted(params.items())
        if name not in ("sign", "sign_type") and value != ""
    )
    params["sign"] = _rsa_sha256(key, signed.encode())
    return Callback(
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(params).encode(),
    )


def wechatpay_callback(
    key: rsa.RSAPrivateKey,
    *,
    key_id: str,
    apiv3_key: bytes,
    resource: dict[str, Any],
    event_type: str = "TRANSACTION.SUCCESS",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> Callback:
    """A WeChat Pay notification: `resource` sealed with AES-256-GCM under the APIv3 key, the
    body signed as `"{timestamp}\\n{nonce}\\n{body}\\n"` with `key`, known as `key_id`."""
    resource_nonce = secrets.token_hex(6)
    associated_data = "transaction" if event_type.startswith("TRANSACTION") else "refund"
    sealed = AESGCM(apiv3_key).encrypt(
        resource_nonce.encode(), json.dumps(resource).encode(), associated_data.encode()
    )
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": "2026-11-23T20:00:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": {
                "original_type": associated_data,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": associated_data,
                "nonce": resource_nonce,
            },
        },
        ensure_ascii=False,
    ).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    return Callback(
        headers={
            "Content-Type": "application/json",
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": key_id,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Wechatpay-Signature": _rsa_sha256(key, f"{stamp}\n{nonce}\n".encode() + body + b"\n"),
        },
        body=body,
    )


@cache
def _private_key(path: Path) -> rsa.RSAPrivateKey:
    # Loading checks the key, which costs far more than a signature: a flood signs with it
    # thousands of times.
    return load_private_key(path)


def _rsa_sha256(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def paid_trade_notification(
    keys: Path, gateway: Gateway, trade: Mapping[str, Any], **changes: Any
) -> Callback:
    """The payment notification of a paid sandbox trade, as its gateway signs it, with
    `changes` made to its fields (Alipay) or to its resource (WeChat Pay); `trade` is as the
    sandbox shows it (`GET /sandbox/trades/{out_trade_no}`), `keys` the dev keys' folder."""
    if gateway is Gateway.ALIPAY:
        return alipay_callback(
            _private_key(keys / "sandbox_private.pem"),
            **{
                "out_trade_no": trade["out_trade_no"],
                "trade_no": trade["trade_no"],
                "total_amount": trade["total_amount"],
                **changes,
            },
        )
    cents = int(Decimal(trade["total_amount"]) * 100)
    resource = {
        "appid": SANDBOX_WECHATPAY_APPID,
        "mchid": SANDBOX_WECHATPAY_MCHID,
        "out_trade_no": trade["out_trade_no"],
        "transaction_id": trade["trade_no"],
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "success_time": "2026-11-23T20:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": cents, "payer_total": cents, "currency": "CNY"},
        **changes,
    }
    return wechatpay_callback(
        _private_key(keys / "wechatpay_platform_private.pem"),
        key_id=SANDBOX_WECHATPAY_PUBLIC_KEY_ID,
        apiv3_key=(keys / "wechatpay_apiv3.key").read_bytes().strip(),
        resource=resource,
    )
