"""The callback door's baseline: a bare FastAPI endpoint that verifies a gateway's notification
with the same adapters as paysaga's door and makes one durable insert into the same database,
nothing more (no order read, no audit trail, no saga). Served by uvicorn as `paysaga api` is,
from the same PAYSAGA_ settings:

    python -m benchmarks.bare_callbacks PORT
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, insert

from core.settings import Settings
from core.vocabulary import Gateway
from gateways.gateway import CallbackRequest
from gateways.registry import notification_verifiers
from store.db import create_db_engine

metadata = MetaData()
received = Table(
    "bench_bare_callbacks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("gateway", String(16), nullable=False),
    Column("event_id", String(64)),
    Column("out_trade_no", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("body", LargeBinary, nullable=False),
)


def bare_app(settings: Settings) -> FastAPI:
    engine = create_db_engine(settings.resolved_database_url)
    metadata.create_all(engine)
    verifiers = notification_verifiers(settings)
    app = FastAPI()

    @app.post("/v1/callbacks/{gateway}")
    async def notification(gateway: str, request: Request) -> Response:
        verifier = verifiers[Gateway(gateway)]
        body = await request.body()
        now = datetime.now(UTC)
        event = verifier.verify(CallbackRequest(dict(request.headers), body), now=now)
        with engine.begin() as connection:
            connection.execute(
                insert(received).values(
                    gateway=event.gateway,
                    event_id=event.event_id,
                    out_trade_no=event.out_trade_no,
                    received_at=now,
                    body=body,
                )
            )
        reply = verifier.acknowledgement()
        return Response(reply.body, status_code=reply.status_code, media_type=reply.media_type)

    return app


if __name__ == "__main__":
    uvicorn.run(
        bare_app(Settings()),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        proxy_headers=False,
        log_level="warning",
    )
