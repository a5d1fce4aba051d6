"""The FastAPI application (OpenAPI docs at /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import callbacks, orders, problems
from api.api_keys import accepted_api_keys
from api.deps import AppState
from core.settings import Settings
from core.temporal import connect_temporal
from gateways.registry import notification_verifiers
from store.db import create_db_engine, create_tables


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.resolved_database_url)
        create_tables(engine)
        temporal = await connect_temporal(settings, lazy=True)
        app.state.paysaga = AppState(
            settings=settings,
            engine=engine,
            temporal=temporal,
            api_keys=accepted_api_keys(settings),
            verifiers=notification_verifiers(settings),
        )
        yield
        engine.dispose()

    app = FastAPI(
        title="paysaga",
        version="0.1.0",
        summary="Payment orders for bookings, paid by QR code through Alipay or WeChat Pay",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(orders.router)
    app.include_router(callbacks.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
