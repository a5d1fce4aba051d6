"""The FastAPI application (OpenAPI docs at /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import admin, callbacks, codec, health, orders, problems
from api.api_keys import accepted_admin_keys, accepted_api_keys
from api.deps import AppState
from api.limits import CLIENT_MAX_BODY_BYTES, BodyLimits
from api.rate_limits import RateLimits
from api.sources import CallbackSources
from core.settings import Settings
from core.temporal import connect_temporal, payload_codec
from gateways.registry import notification_verifiers
from store.db import create_db_engine


def create_app(settings: Settings) -> FastAPI:
    """The API; SettingsError, before anything is served, for a door setting it cannot use."""
    callback_sources = CallbackSources.from_settings(settings)
    rate_limits = RateLimits(
        requests=settings.rate_limit_requests,
        window_seconds=settings.rate_limit_window_seconds,
    )
    signed_key_ids = frozenset(
        key_id.strip() for key_id in (settings.signed_key_ids or "").split(",") if key_id.strip()
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.resolved_database_url)
        temporal = await connect_temporal(settings, lazy=True)
        app.state.paysaga = AppState(
            settings=settings,
            engine=engine,
            temporal=temporal,
            api_keys=accepted_api_keys(settings),
            admin_keys=accepted_admin_keys(settings),
            codec=payload_codec(settings),
            signed_key_ids=signed_key_ids,
            rate_limits=rate_limits,
            verifiers=notification_verifiers(settings),
            callback_sources=callback_sources,
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
    app.add_middleware(
        BodyLimits,
        limits={
            f"{callbacks.router.prefix}/": callbacks.MAX_BODY_BYTES,
            f"{codec.router.prefix}/": codec.MAX_BODY_BYTES,
        },
        default=CLIENT_MAX_BODY_BYTES,
    )
    # Outermost: a browser's preflight is answered before anything else looks at it.
    app.add_middleware(codec.CodecCors, origins=settings.codec_cors_origin_list)
    app.include_router(orders.router)
    app.include_router(admin.router)
    app.include_router(callbacks.router)
    app.include_router(codec.router)
    app.include_router(health.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
