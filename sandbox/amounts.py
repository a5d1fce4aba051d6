"""Yuan amounts as Alipay writes them: Decimal, at most two decimals, `"29.70"` on the wire."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("100000000")


def parse_amount(value: object) -> Decimal:
    """An amount from biz_content (string or JSON number parsed as Decimal), or ValueError.

    Alipay takes `29.7` as well as `29.70`, but refuses fractions of a cent and anything
    outside 0.01–100000000.
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


def format_amount(amount: Decimal) -> str:
    return f"{amount.quantize(CENT):f}"
