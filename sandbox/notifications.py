"""The business fields of Alipay's `trade_status_sync` notifications about one trade."""

from __future__ import annotations

import json

from gateways.alipay_formats import format_amount, format_time, format_time_millis
from sandbox.amounts import format_sum
from sandbox.trades import Refund, Trade, TradeStatus


def notification_fields(trade: Trade, refund: Refund | None, *, seller_id: str) -> dict[str, str]:
    """Fields for a paid trade's notification; with `refund`, for that refund of it.

    `trade` is the snapshot taken right after the change, so `refund_fee` is the running
    total refunded, as in Alipay's refund notifications.
    """
    scan = trade.require_scan()
    if trade.paid_at is None or trade.status is None:
        raise ValueError(f"trade {trade.out_trade_no} is unpaid: Alipay notifies paid trades only")
    amount = format_amount(trade.total_amount)
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
        "gmt_create": format_time(scan.created_at),
        "gmt_payment": format_time(trade.paid_at),
        "fund_bill_list": json.dumps(
            [{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}], separators=(",", ":")
        ),
    }
    if refund is not None:
        fields["refund_fee"] = format_sum(trade.refunded_amount)
        fields["gmt_refund"] = format_time_millis(refund.refunded_at)
        fields["out_biz_no"] = refund.out_request_no
    if trade.status is TradeStatus.TRADE_CLOSED and trade.closed_at is not None:
        fields["gmt_close"] = format_time(trade.closed_at)
    return fields
