"""Alipay's wall-clock strings: `yyyy-MM-dd HH:mm:ss` in China time (UTC+8), whatever our zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
_FORMAT = "%Y-%m-%d %H:%M:%S"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_china(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime(_FORMAT)


def format_china_millis(moment: datetime) -> str:
    """`yyyy-MM-dd HH:mm:ss.SSS`: the one format Alipay uses for `gmt_refund`."""
    local = moment.astimezone(CHINA)
    return f"{local.strftime(_FORMAT)}.{local.microsecond // 1000:03d}"


def parse_china(text: str) -> datetime:
    """Raises ValueError for anything but Alipay's format."""
    return datetime.strptime(text, _FORMAT).replace(tzinfo=CHINA)
