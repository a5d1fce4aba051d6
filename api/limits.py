"""How much of a request body each route may read: more is refused with 413, unread.

A pure ASGI middleware, beneath everything that reads a body (FastAPI's parsing, authentication,
a callback door), counts the bytes as they are received. A request that announces more than
its route's limit (Content-Length) is refused at its first read; one that streams more
(chunked) as soon as it passes the limit. Nothing but the limit is ever held, so memory stays
flat however much is sent, and the refusal comes before any key or signature is looked at.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An order request is a few short fields; a request body far past that is not a client's.
CLIENT_MAX_BODY_BYTES = 16384


class BodyTooLarge(HTTPException):
    """Raised by the body's read: answered 413 `{"detail": …}`, or as a callback door says."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over this route's limit of {limit} bytes")


class BodyLimits:
    """Each route's body limit: the longest of `limits`' path prefixes that matches, else
    `default`."""

    def __init__(self, app: ASGIApp, *, limits: Mapping[str, int], default: int) -> None:
        self._app = app
        self._limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)
        self._default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        announced = _content_length(scope)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            if announced is not None and announced > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self._app(scope, receive_within_limit, send)

    def _limit(self, path: str) -> int:
        return next(
            (limit for prefix, limit in self._limits if path.startswith(prefix)), self._default
        )


def _content_length(scope: Scope) -> int | None:
    # The server refuses a malformed Content-Length itself; what gets here is digits, or absent.
    announced = Headers(scope=scope).get("content-length")
    return int(announced) if announced is not None and announced.isdigit() else None
