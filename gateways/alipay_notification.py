"""Alipay's asynchronous notifications (form POSTs to our notify_url): verify, then read.

Only the authenticity checks that need nothing but the notification and our configuration are
made here; whether `out_trade_no` is one of our orders and `total_amount` its amount is for the
caller, who has the orders. `AlipayNotifications` is Alipay's callback door behind paysaga's
gateway seam (`gateways.gateway`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives.asymmetric import rsa

from core.money import to_cents
from core.vocabulary import Gateway
from gateways import alipay_signing
from gateways.alipay import PAID_STATES
from gateways.alipay_formats import parse_amount, parse_time
from gateways.errors import NotificationRejected
from gateways.gateway import CallbackReply, CallbackRequest, EventKind, NotifiedEvent

T = TypeVar("T")

# Larger than any notification Alipay sends (its longest fields are a subject and a body of at
# most 256 and 128 characters), and small enough to read whole.
MAX_BODY_BYTES = 16384
# Fields Alipay documents as always present in a trade notification.
REQUIRED_FIELDS = (
    "notify_id",
    "notify_type",
    "app_id",
    "out_trade_no",
    "trade_no",
    "trade_status",
    "total_amount",
)


@dataclass(frozen=True)
class AlipayNotification:
    notify_id: str
    notify_type: str
    app_id: str
    out_trade_no: str
    trade_no: str
    trade_status: str
    total_amount: Decimal
    refund_fee: Decimal | None
    out_biz_no: str | None
    gmt_payment: datetime | None
    gmt_refund: datetime | None
    seller_id: str | None
    params: dict[str, str]

    @property
    def is_refund(self) -> bool:
        # Refunds are notified to the same notify_url: a partial one as TRADE_SUCCESS, a full
        # one as TRADE_CLOSED, both with refund fields that a payment never carries.
        return (
            (self.refund_fee is not None and self.refund_fee > 0)
            or self.gmt_refund is not None
            or self.out_biz_no is not None
        )

    @property
    def is_payment(self) -> bool:
        """The trade is paid. TRADE_FINISHED arrives again later: the same payment, not a second."""
        return self.trade_status in PAID_STATES and not self.is_refund


class AlipayNotifications:
    """Alipay's callback door: RSA2-verified forms, answered with the text `success`."""

    def __init__(
        self, *, alipay_public_key: rsa.RSAPublicKey, app_id: str, seller_id: str | None
    ) -> None:
        self._alipay_public_key = alipay_public_key
        self._app_id = app_id
        self._seller_id = seller_id

    def verify(self, request: CallbackRequest, *, now: datetime) -> NotifiedEvent:
        # Alipay's notifications carry no timestamp a replay could be judged by: notify_id
        # repeats on purpose across resends, and the money rules make a repeat harmless.
        notification = verify_notification(
            _form(request.body),
            alipay_public_key=self._alipay_public_key,
            app_id=self._app_id,
            seller_id=self._seller_id,
        )
        if notification.is_refund:
            kind = EventKind.REFUND
        elif notification.is_payment:
            kind = EventKind.PAYMENT
        else:
            kind = EventKind.OTHER
        return NotifiedEvent(
            gateway=Gateway.ALIPAY,
            kind=kind,
            event_id=notification.notify_id,
            out_trade_no=notification.out_trade_no,
            trade_no=notification.trade_no,
            trade_status=notification.trade_status,
            amount_cents=to_cents(notification.total_amount),
            paid_at=notification.gmt_payment,
        )

    def acknowledgement(self) -> CallbackReply:
        # Alipay stops resending on exactly these seven characters.
        return CallbackReply(200, b"success", "text/plain")

    def refusal(self, status_code: int, message: str) -> CallbackReply:
        # Anything but `success` makes Alipay send again; the JSON is for people reading logs.
        body = json.dumps({"detail": message}, ensure_ascii=False).encode()
        return CallbackReply(status_code, body, "application/json")


def _form(body: bytes) -> dict[str, str]:
    if len(body) > MAX_BODY_BYTES:
        raise NotificationRejected("body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as malformed:
        raise NotificationRejected("body is not a utf-8 form") from malformed
    params = dict(pairs)
    if len(params) != len(pairs):
        raise NotificationRejected("a field is repeated")
    return params


def verify_notification(
    params: Mapping[str, str],
    *,
    alipay_public_key: rsa.RSAPublicKey,
    app_id: str,
    seller_id: str | None = None,
) -> AlipayNotification:
    """The notification, once it is proven to come from Alipay for us; else NotificationRejected."""
    _check_signature(params, alipay_public_key)
    for name in REQUIRED_FIELDS:
        if not params.get(name):
            raise NotificationRejected(f"missing field {name}")
    # Alipay may add auth_app_id (the app acting for the merchant); the trade's own app is app_id.
    if params["app_id"] != app_id:
        raise NotificationRejected(f"app_id {params['app_id']!r} is not ours")
    if seller_id is not None and params.get("seller_id") != seller_id:
        raise NotificationRejected(f"seller_id {params.get('seller_id')!r} is not ours")
    return AlipayNotification(
        notify_id=params["notify_id"],
        notify_type=params["notify_type"],
        app_id=params["app_id"],
        out_trade_no=params["out_trade_no"],
        trade_no=params["trade_no"],
        trade_status=params["trade_status"],
        total_amount=_amount(params["total_amount"], "total_amount"),
        refund_fee=_optional(params, "refund_fee", _amount),
        out_biz_no=params.get("out_biz_no") or None,
        gmt_payment=_optional(params, "gmt_payment", _time),
        gmt_refund=_optional(params, "gmt_refund", _time),
        seller_id=params.get("seller_id") or None,
        params=dict(params),
    )


def _check_signature(params: Mapping[str, str], alipay_public_key: rsa.RSAPublicKey) -> None:
    sign_type = params.get("sign_type")
    if not sign_type:
        raise NotificationRejected("missing field sign_type")
    # Alipay's SDKs would also verify SHA-1 `RSA`; SHA-1 is broken for collisions, so we refuse
    # it rather than follow them.
    if sign_type != "RSA2":
        raise NotificationRejected(f"sign_type {sign_type!r} is not accepted, RSA2 only")
    signature = params.get("sign")
    if not signature:
        raise NotificationRejected("missing field sign")
    message = alipay_signing.signing_string(params, unsigned=alipay_signing.NOTIFICATION_UNSIGNED)
    if not alipay_signing.verify(message, signature, alipay_public_key):
        raise NotificationRejected("signature does not verify")


def _optional(params: Mapping[str, str], name: str, parse: Callable[[str, str], T]) -> T | None:
    value = params.get(name)
    return parse(value, name) if value else None


def _amount(value: str, name: str) -> Decimal:
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise NotificationRejected(f"{name} {value!r} is not an amount") from exc


def _time(value: str, name: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise NotificationRejected(f"{name} {value!r} is not a time") from exc
