"""Readiness: whether this API process can take orders now (`/healthz` only says it is alive).

`GET /readyz` answers 200 when the database and Temporal both answer, else 503, and says of
each offered gateway whether its breaker is open: an open breaker refuses that gateway's new
orders, but the others still go through, so it does not make the process unready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import State
from store import breakers
from store.db import transaction

# A load balancer asks often and must not wait long: a check slower than this is a failure.
CHECK_SECONDS = 2.0
OK = "ok"

router = APIRouter(tags=["health"])


class BreakerState(BaseModel):
    # "unknown" while the database, where workers record it, does not answer.
    breaker: Literal["closed", "open", "unknown"]
    reason: str | None = None
    since: datetime | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    database: str
    temporal: str
    gateways: dict[str, BreakerState]


@router.get("/readyz", include_in_schema=False)
async def readyz(state: State) -> JSONResponse:
    (database, gateways), temporal = await asyncio.gather(
        _database(state.engine, state.verifiers), _temporal(state.temporal)
    )
    ready = database == OK and temporal == OK
    readiness = Readiness(
        status="ready" if ready else "not ready",
        database=database,
        temporal=temporal,
        gateways=gateways,
    )
    return JSONResponse(readiness.model_dump(mode="json"), status_code=200 if ready else 503)


async def _database(
    engine: Engine, gateways: Collection[str]
) -> tuple[str, dict[str, BreakerState]]:
    """The offered gateways' breakers, read in one go, and "ok"; else what went wrong."""
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            recorded = await asyncio.to_thread(_recorded_breakers, engine)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s", _unknown(gateways)
    except SQLAlchemyError as failure:
        return f"unavailable: {type(failure).__name__}", _unknown(gateways)
    closed = BreakerState(breaker="closed")
    return OK, {gateway: recorded.get(gateway, closed) for gateway in gateways}


def _recorded_breakers(engine: Engine) -> dict[str, BreakerState]:
    with transaction(engine) as session:
        return {
            row.gateway: BreakerState(
                breaker="open" if row.open else "closed", reason=row.reason, since=row.changed_at
            )
            for row in breakers.read_breakers(session)
        }


def _unknown(gateways: Collection[str]) -> dict[str, BreakerState]:
    return {gateway: BreakerState(breaker="unknown") for gateway in gateways}


async def _temporal(client: Client) -> str:
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            serving = await client.service_client.check_health(
                timeout=timedelta(seconds=CHECK_SECONDS)
            )
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s"
    except RPCError as failure:
        return f"unavailable: {failure.message}"
    except RuntimeError as failure:
        # The SDK's lazy client raises this, not an RPCError, when it cannot connect at all.
        return f"unreachable: {failure}"
    return OK if serving else "up, but its workflow service is not serving"
