"""New orders fail fast on a gateway whose breaker a worker has opened, instead of waiting out
their creation deadline on a gateway that is not answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine

from api.problems import ApiProblem
from store import breakers
from store.db import transaction

# How stale an API process's view of the breakers may be: one database read per second at
# most, however many orders come in.
CACHE_SECONDS = 1.0


class OpenBreakers:
    """The gateways whose breakers are open, with why, read from the database at most once per
    `cache_seconds`."""

    def __init__(
        self,
        engine: Engine,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._read_at: float | None = None
        self._open: Mapping[str, str] = {}
        # A burst of orders as the cache runs out makes one read, not one each.
        self._reading = asyncio.Lock()

    async def reasons(self) -> Mapping[str, str]:
        async with self._reading:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._cache_seconds:
                self._open = await asyncio.to_thread(self._read)
                self._read_at = now
        return self._open

    def _read(self) -> dict[str, str]:
        with transaction(self._engine) as session:
            rows = breakers.read_breakers(session, open_only=True)
            return {row.gateway: row.reason or "its calls fail" for row in rows}


# One view per database, shared by every request of this process.
_views: WeakKeyDictionary[Engine, OpenBreakers] = WeakKeyDictionary()


async def failing_gateway(engine: Engine, gateway: str) -> ApiProblem | None:
    """The 503 naming the gateway if its breaker is open: no order is made on it meanwhile."""
    view = _views.get(engine)
    if view is None:
        view = _views[engine] = OpenBreakers(engine)
    reason = (await view.reasons()).get(gateway)
    if reason is None:
        return None
    return ApiProblem(
        503,
        f"{gateway} is failing: {reason}; no order was created, try again later or use "
        "another gateway",
    )
