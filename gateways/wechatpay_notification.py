"""WeChat Pay's notifications (JSON POSTs to our notify_url): verify, decrypt, then read.

A notification is believed only once WeChat Pay's signature over its raw body verifies with a
key we hold and its timestamp is fresh; its resource only once it decrypts under our APIv3 key
and names our merchant (and, for a trade, our app). Whether `out_trade_no` is one of our orders
and the amount its amount is for the caller, who has the orders. `WechatPayNotifications` is
WeChat Pay's callback door behind paysaga's gateway seam (`gateways.gateway`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from core.vocabulary import Gateway
from gateways import wechatpay_signing
from gateways.errors import NotificationRejected
from gateways.gateway import CallbackReply, CallbackRequest, EventKind, NotifiedEvent
from gateways.wechatpay import WechatPayConfig, parse_json, parse_time, read_fen

ALGORITHM = "AEAD_AES_256_GCM"
RESOURCE_TYPE = "encrypt-resource"
PAYMENT_EVENT = "TRANSACTION.SUCCESS"
PAID_STATE = "SUCCESS"
# REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED: about a refund, never a payment.
REFUND_EVENT_PREFIX = "REFUND."
# Longer than any identifier read here (WeChat Pay sends them at most 36 characters long), short
# enough to stay a plain label wherever it is stored.
MAX_IDENTIFIER = 128


class WechatPayNotifications:
    """WeChat Pay's callback door: signed JSON with a sealed resource, answered 204."""

    def __init__(self, config: WechatPayConfig) -> None:
        self._config = config

    def verify(self, request: CallbackRequest, *, now: datetime) -> NotifiedEvent:
        try:
            wechatpay_signing.check_signature(
                request.headers,
                request.body,
                public_keys=self._config.wechatpay_public_keys,
                now=now,
            )
        except ValueError as refused:
            raise NotificationRejected(str(refused)) from refused
        envelope = _object(_json(request.body, "body"), "body")
        event_id = _identifier(envelope, "id", "")
        event_type = _identifier(envelope, "event_type", "")
        resource_type = _identifier(envelope, "resource_type", "")
        if resource_type != RESOURCE_TYPE:
            raise NotificationRejected(f"resource_type {resource_type!r} is not {RESOURCE_TYPE}")
        sealed = envelope.get("resource")
        if sealed is None:
            raise NotificationRejected("missing field resource")
        resource = self._decrypt(_object(sealed, "resource"))
        is_refund = event_type.startswith(REFUND_EVENT_PREFIX)
        self._check_ours(resource, is_refund=is_refund)
        status = _identifier(resource, "refund_status" if is_refund else "trade_state")
        if is_refund:
            kind = EventKind.REFUND
        elif event_type == PAYMENT_EVENT and status == PAID_STATE:
            kind = EventKind.PAYMENT
        else:
            kind = EventKind.OTHER
        paid = kind is EventKind.PAYMENT
        return NotifiedEvent(
            gateway=Gateway.WECHATPAY,
            kind=kind,
            event_id=event_id,
            out_trade_no=_identifier(resource, "out_trade_no"),
            trade_no=(
                _identifier(resource, "transaction_id")
                if paid
                else _optional_identifier(resource, "transaction_id")
            ),
            trade_status=status,
            amount_cents=_total(resource, required=paid),
            paid_at=_success_time(resource) if paid else None,
            nonce=request.headers[wechatpay_signing.NONCE_HEADER],
        )

    def acknowledgement(self) -> CallbackReply:
        # WeChat Pay takes 200 or 204 as received and stops resending.
        return CallbackReply(204, b"", None)

    def refusal(self, status_code: int, message: str) -> CallbackReply:
        # A 4xx or 5xx makes WeChat Pay send again later; this body is the one it documents.
        body = json.dumps({"code": "FAIL", "message": message}, ensure_ascii=False).encode()
        return CallbackReply(status_code, body, "application/json")

    def _decrypt(self, sealed: Mapping[str, object]) -> dict[str, object]:
        algorithm = _text(sealed, "algorithm", "resource.")
        if algorithm != ALGORITHM:
            raise NotificationRejected(f"resource.algorithm {algorithm!r} is not {ALGORITHM}")
        try:
            plaintext = wechatpay_signing.decrypt_resource(
                apiv3_key=self._config.apiv3_key,
                nonce=_text(sealed, "nonce", "resource."),
                ciphertext=_text(sealed, "ciphertext", "resource."),
                # Sealed with an empty associated_data when there is none.
                associated_data=_text(sealed, "associated_data", "resource.", required=False),
            )
        except ValueError as undecryptable:
            raise NotificationRejected(f"resource: {undecryptable}") from undecryptable
        return _object(_json(plaintext, "decrypted resource"), "decrypted resource")

    def _check_ours(self, resource: Mapping[str, object], *, is_refund: bool) -> None:
        mchid = _identifier(resource, "mchid")
        if mchid != self._config.mchid:
            raise NotificationRejected(f"mchid {mchid!r} is not ours")
        # A trade's resource names the app it was paid through; a refund's names none.
        appid = (
            _optional_identifier(resource, "appid") if is_refund else _identifier(resource, "appid")
        )
        if appid is not None and appid != self._config.appid:
            raise NotificationRejected(f"appid {appid!r} is not ours")


def _json(data: bytes, what: str) -> object:
    try:
        return parse_json(data)
    except ValueError as malformed:
        raise NotificationRejected(f"{what} is {malformed}") from malformed


def _object(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise NotificationRejected(f"{what} is not a JSON object")
    return value


def _text(fields: Mapping[str, object], name: str, prefix: str, *, required: bool = True) -> str:
    value = fields.get(name)
    if value is None:
        if required:
            raise NotificationRejected(f"missing field {prefix}{name}")
        return ""
    if not isinstance(value, str):
        raise NotificationRejected(f"field {prefix}{name} is not a string")
    return value


def _identifier(fields: Mapping[str, object], name: str, prefix: str = "resource.") -> str:
    value = _optional_identifier(fields, name, prefix)
    if value is None:
        raise NotificationRejected(f"missing field {prefix}{name}")
    return value


def _optional_identifier(
    fields: Mapping[str, object], name: str, prefix: str = "resource."
) -> str | None:
    """A short, plain text field: no control characters (a NUL cannot even be stored)."""
    value = _text(fields, name, prefix, required=False)
    if value == "":
        return None
    if len(value) > MAX_IDENTIFIER or not value.isprintable():
        raise NotificationRejected(f"field {prefix}{name} is not a plain identifier")
    return value


def _total(resource: Mapping[str, object], *, required: bool) -> int | None:
    # For a refund, still the trade's total: what was paid, not what goes back.
    try:
        return read_fen(resource, "total", required=required, where="resource.")
    except ValueError as wrong:
        raise NotificationRejected(str(wrong)) from wrong


def _success_time(resource: Mapping[str, object]) -> datetime | None:
    text = _text(resource, "success_time", "resource.", required=False)
    if text == "":
        return None
    try:
        return parse_time(text)
    except ValueError as wrong:
        raise NotificationRejected("resource.success_time is not an RFC 3339 time") from wrong
