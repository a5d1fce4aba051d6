"""Errors the API answers with, as `{"detail": "..."}` JSON and the right status code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiProblem(Exception):
    """Answered `status_code` with `{"detail": detail, **extra}` and these headers."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(OperationalError, _database_unavailable)


async def _api_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return JSONResponse(
        {"detail": exc.detail, **exc.extra}, status_code=exc.status_code, headers=exc.headers
    )


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    messages = [_describe(error) for error in exc.errors()]
    return JSONResponse(
        {"detail": "; ".join(messages), "errors": [_plain(error) for error in exc.errors()]},
        status_code=422,
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the path's first route only; where a path has a route
        # per method (GET and POST /v1/webhook-endpoints), every one of them is allowed.
        headers["Allow"] = ", ".join(sorted(_allowed(request, headers.get("Allow", ""))))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _allowed(request: Request, named: str) -> set[str]:
    methods = {method.strip() for method in named.split(",") if method.strip()}
    template = getattr(request.scope.get("route"), "path", None)
    documented = request.app.openapi()["paths"].get(template, {})
    return methods | {method.upper() for method in documented}


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Nothing was committed: the client (or the gateway, for a callback) must try again.
    return JSONResponse(
        {"detail": "the database is unavailable; nothing was changed, try again"},
        status_code=503,
    )


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg"))


def _plain(error: dict[str, Any]) -> dict[str, Any]:
    # The raw input and pydantic's context may hold values JSON cannot carry (Decimal, bytes).
    return {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
