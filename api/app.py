"""The FastAPI application (OpenAPI docs at /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import callbacks, orders, problems
from api.deps import AppState
from gateways.alipay_signing import load_public_key
from paysaga.api_keys import accepted_api_keys
from paysaga.connections import connect_temporal
from paysaga.settings import Settings
from store.db import create_db_engine, create_tables


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.resolved_database_url)
        create_tables(engine)
        alipay = settings.alipay
        temporal = await connect_temporal(settings, lazy=True)
        app.state.paysaga = AppState(
            settings=settings,
            engine=engine,
            temporal=temporal,
            api_keys=accepted_api_keys(settings),
            alipay_public_key=load_public_key(alipay.alipay_public_key_file),
            alipay_app_id=alipay.app_id,
            alipay_seller_id=alipay.seller_id,
        )
        yield
        engine.dispose()

    app = FastAPI(
        title="paysaga",
        version="0.1.0",
        summary="Payment orders for bookings, paid by QR code through Alipay",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(orders.router)
    app.include_router(callbacks.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
