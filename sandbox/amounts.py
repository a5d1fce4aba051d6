"""Yuan amounts as Alipay's gateway reads them from biz_content, and sums of them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from gateways.alipay_formats import CENT, MAX_AMOUNT


def parse_amount(value: object) -> Decimal:
    """An amount from biz_content (string or JSON number parsed as Decimal), or ValueError.

    Alipay takes `29.7` as well as `29.70`, but refuses fractions of a cent and anything
    outside 0.01–100000000. Laxer than `gateways.alipay_formats.parse_amount` on purpose:
    that one checks what Alipay sends us, this one takes what callers send Alipay.
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
        raise ValueError(f"{value!r} is not an amount in cents")
    return amount.quantize(CENT)


def format_sum(amount: Decimal) -> str:
    """A sum of amounts, like "29.70".

    Not `gateways.alipay_formats.format_amount`, which refuses what one trade cannot carry:
    a sum is 0.00 while nothing is refunded, and a ledger's totals can pass one trade's ceiling.
    """
    return f"{amount.quantize(CENT):f}"
