"""The sandbox gateway's FastAPI app, and `serve` to run it under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI

from sandbox import buyer, gateway, inspection
from sandbox.settings import SandboxSettings
from sandbox.state import Sandbox


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: SandboxSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """An app standing in for Alipay; its key pair is made now if it does not exist yet."""
    sandbox = Sandbox(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sandbox.notifier.aclose()

    app = FastAPI(title="paysaga Alipay sandbox", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.include_router(gateway.router)
    app.include_router(buyer.router)
    app.include_router(inspection.router)
    return app


def serve(settings: SandboxSettings) -> None:
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
