"""The FastAPI application (OpenAPI docs at /docs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api import admin, callbacks, checkout, codec, health, orders, problems, webhooks
from api.api_keys import accepted_admin_keys, accepted_api_keys
from api.deps import AppState, State
from api.limits import CLIENT_MAX_BODY_BYTES, BodyLimits
from api.metrics import Metrics, RequestMetrics
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
        engine = create_db_engine(
            settings.resolved_database_url, public_base_url=settings.public_base_url
        )
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
    app.add_middleware(codec.CodecCors, origins=settings.codec_cors_origin_list)
    metrics = Metrics()
    app.state.metrics = metrics
    # Added last, so outermost: it sees every answer, the body limits' 413 and the codec's
    # preflights included.
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(orders.router)
    app.include_router(webhooks.router)
    app.include_router(checkout.router)
    app.include_router(admin.router)
    app.include_router(callbacks.router)
    app.include_router(codec.router)
    app.include_router(health.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def scrape(state: State) -> Response:
        # Off the event loop: the scrape reads the database.
        text = await asyncio.to_thread(metrics.exposition, state.engine)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app
