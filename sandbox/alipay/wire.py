"""Alipay's wire rules from the gateway's side: the content its RSA2 signatures cover, the
names of its answer nodes, and the yuan amounts callers send in biz_content."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from sandbox.money import CENT

# Alipay's ceiling for one trade: precreate's total_amount is 0.01 to 100000000 yuan.
MAX_AMOUNT = Decimal("100000000")
# A request is signed over every parameter but `sign` (its `sign_type` included); a
# notification over every field but `sign` and `sign_type`.
REQUEST_UNSIGNED = frozenset({"sign"})
NOTIFICATION_UNSIGNED = frozenset({"sign", "sign_type"})


def signed_content(params: Mapping[str, str], *, unsigned: frozenset[str]) -> str:
    """What an RSA2 signature covers: `k=v` pairs sorted by key, values as they are (not
    URL-encoded), empty ones left out, joined with `&`."""
    pairs = sorted((key, value) for key, value in params.items() if key not in unsigned and value)
    return "&".join(f"{key}={value}" for key, value in pairs)


def answer_node(method: str) -> str:
    """The node a method answers in: `alipay.trade.query` -> `alipay_trade_query_response`."""
    return f"{method.replace('.', '_')}_response"


def parse_amount(value: object) -> Decimal:
    """An amount from biz_content (string or JSON number parsed as Decimal), or ValueError.

    Alipay takes `29.7` as well as `29.70`, but refuses fractions of a fen and anything
    outside 0.01-100000000.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError("must be an amount in yuan")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount") from None
    # Range first: quantizing an enormous exponent would itself fail.
    if not amount.is_finite() or not CENT <= amount <= MAX_AMOUNT:
        raise ValueError(f"{value!r} is outside 0.01-100000000")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{value!r} is not an amount in fen")
    return amount.quantize(CENT)
