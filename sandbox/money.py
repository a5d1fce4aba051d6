"""Money as the sandbox shows it: `Decimal` yuan, written with two decimals.

Alipay carries yuan on the wire; WeChat Pay carries integer fen, turned into yuan only for the
sandbox's own views, so that both halves show money the same way.
"""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def yuan(amount: Decimal) -> str:
    """Like "29.70"; also sums such as "0.00" or a ledger total beyond one trade's ceiling."""
    return f"{amount.quantize(CENT):f}"


def fen_to_yuan(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2)
