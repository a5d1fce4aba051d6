"""China time, the zone both gateways write their times in, and the two ways they write it.

Alipay writes wall-clock `yyyy-MM-dd HH:mm:ss` with no offset; WeChat Pay writes RFC 3339 with
the offset, `2018-06-08T10:34:56+08:00`. Inside the sandbox every time is a tz-aware datetime.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

# China has kept UTC+8 without daylight saving since 1991: a fixed offset is exact.
CHINA_TIME = timezone(timedelta(hours=8), "China")
_WALL_TIME = "%Y-%m-%d %H:%M:%S"
# `fromisoformat` alone takes more than RFC 3339 (week dates, no seconds, no offset).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def utc_now() -> datetime:
    return datetime.now(UTC)


def wall_time(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss` in China time, as Alipay writes times."""
    return _in_china(moment).strftime(_WALL_TIME)


def wall_time_millis(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS`: how Alipay writes `gmt_refund` in notifications."""
    return f"{wall_time(moment)}.{moment.microsecond // 1000:03d}"


def parse_wall_time(text: str) -> datetime:
    """A whole-second China wall time, as callers send Alipay's `timestamp` and `time_expire`."""
    return datetime.strptime(text, _WALL_TIME).replace(tzinfo=CHINA_TIME)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 in China time to the second, as WeChat Pay writes times."""
    return _in_china(moment).isoformat(timespec="seconds")


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time with its offset, like `2018-06-08T10:34:56+08:00`, or ValueError."""
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time with an offset")
    return datetime.fromisoformat(text)


def _in_china(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("gateway times need a timezone-aware datetime, got a naive one")
    return moment.astimezone(CHINA_TIME)
