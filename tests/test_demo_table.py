from __future__ import annotations

import re
from decimal import Decimal

import pytest

from paysaga.demo import ApiOrder, MoneyRow, OrderRow, print_table

REFUNDED_ORDER = b"""{
    "order_id": "ord_a", "reservation_id": "demo-1-room", "kind": "booking",
    "gateway": "wechatpay",
    "status": "refunded", "status_reason": "superseded by a newer order", "amount": "9.90",
    "currency": "CNY", "created_at": "2025-01-01T00:00:00Z",
    "expires_at": "2025-01-01T00:00:10Z", "flagged": null, "payment": "immediate",
    "qr_code": "https://qr.alipay.com/x", "checkout_url": null,
    "payments": [{"trade_no": "t1", "amount": "9.90", "status": "refunded", "paid_at": null}],
    "refunds": [{"refund_no": "rf_t1", "trade_no": "t1", "amount": "9.90",
                 "status": "succeeded"}]
}"""


def test_a_table_shows_every_cell_whole_in_its_column(capsys: pytest.CaptureFixture[str]) -> None:
    note = "3 superseded window paid; superseded by ord_0123456789abcdef0123456789 [refund]"
    rows = [
        ("ord_fedcba9876543210fedcba9876", "29.70", "1 booking"),
        ("ord_0123456789abcdef0123456789", "9.90", note),
    ]

    print_table(("order", "amount", "note"), rows)

    lines = capsys.readouterr().out.splitlines()
    # Header and rows between the box's vertical rules (heavy under the header's, light after).
    cells = [[cell.strip() for cell in re.split("[│┃]", line)[1:-1]] for line in lines]
    assert [row for row in cells if row] == [["order", "amount", "note"], *map(list, rows)]
    # Every line as wide as the others: the columns line up.
    assert len({len(line) for line in lines}) == 1


def test_an_order_row_shows_its_money_and_why_it_ended_so() -> None:
    order = ApiOrder.model_validate_json(REFUNDED_ORDER)

    row = OrderRow.of(order, note="3 superseded window paid")

    assert order.amount == Decimal("9.90")
    assert order.payment_timeout_seconds == 10
    assert row.cells() == (
        "ord_a",
        "demo-1-room",
        "booking",
        "wechatpay",
        "9.90",
        "refunded",
        "9.90",
        "9.90 succeeded",
        "3 superseded window paid; superseded by a newer order",
    )


def test_money_adds_up_only_when_the_api_and_the_gateway_agree() -> None:
    def money(gateway_net: str) -> MoneyRow:
        return MoneyRow(
            reservation_id="demo-1-room",
            paid_in=Decimal("39.60"),
            refunded=Decimal("9.90"),
            owed=Decimal("29.70"),
            gateway_net=Decimal(gateway_net),
        )

    assert money("29.70").cells()[-1] == "OK"
    assert money("39.60").cells()[-1] == "MISMATCH"
