"""Amounts: integer cents inside paysaga, yuan strings with two decimals on every wire."""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Cents of an amount that has no fraction of a cent; anything else is refused."""
    if amount != amount.quantize(CENT):
        raise ValueError(f"{amount} has a fraction of a cent")
    return int(amount * 100)


def to_amount(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_amount(cents: int) -> str:
    return str(to_amount(cents))
