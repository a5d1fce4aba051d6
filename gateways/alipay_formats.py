"""How Alipay writes times and amounts on the wire, in both directions.

Times are `yyyy-MM-dd HH:mm:ss` in China time with no offset written; amounts are yuan with at
most two decimals. Everything inside paysaga uses tz-aware UTC datetimes and `Decimal` yuan.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

# China has kept UTC+8 without daylight saving since 1991, so a fixed offset is exact and
# needs no tz database.
CHINA_TIME = timezone(timedelta(hours=8), "China")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Notifications give `gmt_refund` with milliseconds, e.g. "2021-07-14 09:51:36.631".
_TIME_FORMAT_FRACTION = _TIME_FORMAT + ".%f"

CENT = Decimal("0.01")
# Alipay's ceiling for one trade (precreate `total_amount` is 0.01 to 100000000).
MAX_AMOUNT = Decimal("100000000")
# Plain ASCII digits only: `Decimal()` would also take "1e3", " 5", "NaN" or Arabic-Indic digits.
# The length cap keeps `quantize` inside Decimal's default precision.
_AMOUNT = re.compile(r"(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,2})?")


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("Alipay times need a timezone-aware datetime, got a naive one")
    return moment.astimezone(CHINA_TIME).strftime(_TIME_FORMAT)


def format_time_millis(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS`: the one format Alipay uses for `gmt_refund`."""
    # China's whole-hour offset leaves the microseconds as they are in any zone.
    return f"{format_time(moment)}.{moment.microsecond // 1000:03d}"


def parse_time(text: str, *, fraction: bool = True) -> datetime:
    """An Alipay time as tz-aware UTC; ValueError if it is not `yyyy-MM-dd HH:mm:ss[.SSS]`.

    `fraction=False` refuses the `.SSS` as well: Alipay's gateway takes the times a caller
    sends (`timestamp`, `time_expire`) in whole seconds only.
    """
    layout = _TIME_FORMAT_FRACTION if fraction and "." in text else _TIME_FORMAT
    return datetime.strptime(text, layout).replace(tzinfo=CHINA_TIME).astimezone(UTC)


def format_amount(amount: Decimal) -> str:
    """A positive amount as Alipay wants it: yuan with exactly two decimals, like "29.70"."""
    if not (amount.is_finite() and 0 < amount <= MAX_AMOUNT and amount == amount.quantize(CENT)):
        raise ValueError(
            f"{amount} is not an amount Alipay takes: 0.01 to 100000000 yuan, whole fen"
        )
    return f"{amount.quantize(CENT):f}"


def parse_amount(text: str) -> Decimal:
    """An Alipay amount string as `Decimal` yuan; ValueError if it is not one."""
    if _AMOUNT.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an amount in yuan")
    return Decimal(text).quantize(CENT)
