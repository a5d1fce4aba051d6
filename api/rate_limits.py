"""Each API key's request budget: PAYSAGA_RATE_LIMIT_REQUESTS per
PAYSAGA_RATE_LIMIT_WINDOW_SECONDS, then 429 with Retry-After.

A token bucket per key identity, kept in this API process's memory: a key may spend its whole
budget at once, then earns it back evenly over the window. With several API processes behind
a load balancer, a key may make up to that many times its budget. Only authenticated requests
are counted, so the buckets are as many as the keys configured, and nobody without a key can
spend someone else's budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.settings import SettingsError


@dataclass
class _Bucket:
    tokens: float
    filled_at: float


class RateLimits:
    def __init__(
        self,
        *,
        requests: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests < 1 or window_seconds <= 0:
            raise SettingsError(
                "PAYSAGA_RATE_LIMIT_REQUESTS and PAYSAGA_RATE_LIMIT_WINDOW_SECONDS must be "
                "at least 1"
            )
        self._capacity = float(requests)
        self._per_second = requests / window_seconds
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, identity: str) -> int | None:
        """Spend one request of `identity`'s budget: None if it had one, else the whole
        seconds until it has."""
        now = self._clock()
        bucket = self._buckets.setdefault(identity, _Bucket(self._capacity, now))
        bucket.tokens = min(
            self._capacity, bucket.tokens + (now - bucket.filled_at) * self._per_second
        )
        bucket.filled_at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self._per_second))
