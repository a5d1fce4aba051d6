"""Alipay's `trade_status_sync` notifications: their fields, their signature, their retries.

A notification is signed once, and the same form, with the same notify_id, is resent until
the merchant answers `success`: 8 attempts over about 25 hours, as Alipay makes them.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.alipay.trades import Refund, Trade, TradeStatus
from sandbox.alipay.wire import NOTIFICATION_UNSIGNED, signed_content
from sandbox.china_time import wall_time, wall_time_millis
from sandbox.money import yuan
from sandbox.notifier import DeliveryRules, Outgoing
from sandbox.signatures import sign


def _acknowledged(response: httpx.Response) -> bool:
    # Alipay asks for the 7 characters `success`; the sandbox forgives a trailing newline.
    return response.status_code == 200 and response.text.strip() == "success"


RULES = DeliveryRules(
    # At once, then after 4m, 10m, 10m, 1h, 2h, 6h and 15h.
    schedule=(0, 4 * 60, 10 * 60, 10 * 60, 60 * 60, 2 * 3600, 6 * 3600, 15 * 3600),
    acknowledged=_acknowledged,
)


def notification_fields(trade: Trade, refund: Refund | None, *, seller_id: str) -> dict[str, str]:
    """Fields for a paid trade's notification; with `refund`, for that refund of it.

    `trade` is the snapshot taken right after the change, so `refund_fee` is the running
    total refunded, as in Alipay's refund notifications.
    """
    scan = trade.require_scan()
    if trade.paid_at is None or trade.status is None:
        raise ValueError(f"trade {trade.out_trade_no} is unpaid: Alipay notifies paid trades only")
    amount = yuan(trade.total_amount)
    fields = {
        "trade_no": scan.trade_no,
        "out_trade_no": trade.out_trade_no,
        "buyer_id": scan.buyer_id,
        "buyer_logon_id": scan.buyer_logon_id,
        "seller_id": seller_id,
        "trade_status": trade.status.value,
        "total_amount": amount,
        "receipt_amount": amount,
        "buyer_pay_amount": amount,
        "invoice_amount": amount,
        "point_amount": "0.00",
        "subject": trade.subject,
        "gmt_create": wall_time(scan.created_at),
        "gmt_payment": wall_time(trade.paid_at),
        "fund_bill_list": json.dumps(
            [{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
        ),
    }
    if refund is not None:
        fields["refund_fee"] = yuan(trade.refunded_amount)
        fields["gmt_refund"] = wall_time_millis(refund.refunded_at)
        fields["out_biz_no"] = refund.out_request_no
    if trade.status is TradeStatus.TRADE_CLOSED and trade.closed_at is not None:
        fields["gmt_close"] = wall_time(trade.closed_at)
    return fields


def signed_form(
    fields: dict[str, str],
    *,
    notify_id: str,
    app_id: str,
    now: datetime,
    private_key: rsa.RSAPrivateKey,
) -> Outgoing:
    """The business `fields` with the notification's own, signed, as the form Alipay posts."""
    form = {
        **fields,
        "notify_time": wall_time(now),
        "notify_type": "trade_status_sync",
        "notify_id": notify_id,
        "app_id": app_id,
        "auth_app_id": app_id,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
    }
    content = signed_content(form, unsigned=NOTIFICATION_UNSIGNED)
    form["sign"] = sign(content.encode("utf-8"), private_key)
    return Outgoing(
        content=urlencode(form).encode("ascii"),
        headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
    )
