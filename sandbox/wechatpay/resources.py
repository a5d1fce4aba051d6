"""The JSON objects WeChat Pay hands out about an order: the transaction, as query answers it
and payment notifications carry it, and the refund, as the refund calls answer it and refund
notifications carry it. Amounts are integer fen; times RFC 3339 in China time."""

from __future__ import annotations

from typing import Any

from sandbox.china_time import rfc3339
from sandbox.wechatpay.transactions import Order, Refund, TradeState

_STATE_DESCRIPTIONS = {
    TradeState.NOTPAY: "订单未支付",
    TradeState.SUCCESS: "支付成功",
    TradeState.REFUND: "转入退款",
    TradeState.CLOSED: "订单已关闭",
}
# Where the sandbox's refunds go: back to the buyer's WeChat balance.
_RECEIVED_ACCOUNT = "支付用户零钱"

Json = dict[str, Any]


def transaction(order: Order) -> Json:
    """The transaction; payment fields (transaction_id, payer, success_time) once paid."""
    resource: Json = {
        "appid": order.appid,
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "trade_type": "NATIVE",
        "trade_state": str(order.state),
        "trade_state_desc": _STATE_DESCRIPTIONS[order.state],
        "attach": "",
        "amount": {"total": order.total, "currency": "CNY", "payer_currency": "CNY"},
    }
    if order.payment is not None:
        resource |= {
            "transaction_id": order.payment.transaction_id,
            "bank_type": "OTHERS",
            "success_time": rfc3339(order.payment.paid_at),
            "payer": {"openid": order.payment.openid},
        }
        resource["amount"]["payer_total"] = order.total
    return resource


def refund(order: Order, done: Refund) -> Json:
    """A refund as the refund calls answer it."""
    if order.payment is None:
        raise ValueError(f"order {order.out_trade_no} is unpaid: it has no refunds")
    resource: Json = {
        "refund_id": done.refund_id,
        "out_refund_no": done.out_refund_no,
        "transaction_id": order.payment.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": _RECEIVED_ACCOUNT,
        "create_time": rfc3339(done.created_at),
        "status": str(done.status),
        "funds_account": "AVAILABLE",
        "amount": {
            "total": order.total,
            "refund": done.amount,
            "from": [],
            "payer_total": order.total,
            "payer_refund": done.amount,
            "settlement_total": order.total,
            "settlement_refund": done.amount,
            "discount_refund": 0,
            "currency": "CNY",
        },
        "promotion_detail": [],
    }
    if done.succeeded_at is not None:
        resource["success_time"] = rfc3339(done.succeeded_at)
    return resource


def refund_notice(order: Order, done: Refund) -> Json:
    """A succeeded refund as its notification carries it: fewer fields, `refund_status`."""
    if order.payment is None or done.succeeded_at is None:
        raise ValueError(f"refund {done.out_refund_no} has not succeeded: nothing to tell")
    return {
        "mchid": order.mchid,
        "out_trade_no": order.out_trade_no,
        "transaction_id": order.payment.transaction_id,
        "out_refund_no": done.out_refund_no,
        "refund_id": done.refund_id,
        "refund_status": str(done.status),
        "success_time": rfc3339(done.succeeded_at),
        "user_received_account": _RECEIVED_ACCOUNT,
        "amount": {
            "total": order.total,
            "refund": done.amount,
            "payer_total": order.total,
            "payer_refund": done.amount,
        },
    }
