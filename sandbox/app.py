"""The sandbox gateway's FastAPI app — both halves in one process — and `serve` to run it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import uvicorn
from fastapi import FastAPI

from sandbox import buyer, inspection
from sandbox.alipay import gateway
from sandbox.china_time import utc_now
from sandbox.settings import SandboxSettings
from sandbox.state import Sandbox
from sandbox.wechatpay import api


def create_app(settings: SandboxSettings, *, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """An app standing in for Alipay and WeChat Pay; its own keys are made now if missing."""
    sandbox = Sandbox(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sandbox.aclose()

    app = FastAPI(title="paysaga gateway sandbox: Alipay and WeChat Pay", lifespan=lifespan)
    app.state.sandbox = sandbox
    app.include_router(gateway.router)
    app.include_router(api.router)
    app.include_router(buyer.router)
    app.include_router(inspection.router)
    return app


def serve(settings: SandboxSettings) -> None:
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
