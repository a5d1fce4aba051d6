"""The business's app's side of webhooks, for tests: an HTTP server that takes deliveries, and
takes only those the `standardwebhooks` library (code nobody here wrote) verifies with the
secret it holds. It can fail the first attempts at each event, refuse some types, answer a
status of choice, or hold the requests about an order until told to let go."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Delivered:
    """A request as it came: its body and headers."""

    body: bytes
    headers: dict[str, str]

    def verifies_with(self, secret: str) -> bool:
        try:
            Webhook(secret).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True


@dataclass
class Receiver:
    secret: str = ""
    # Each event is answered 500 this many times before it is taken.
    failing_attempts: int = 0
    # Events of these types are answered 500, however often they come.
    refused_types: set[str] = field(default_factory=set)
    # What a verified event that is not failed is answered.
    answer: int = 204
    # Verified requests about this order wait until this is set.
    hold: asyncio.Event | None = None
    held_order: str | None = None
    # Every request, verified or not, in the order they came.
    requests: list[Delivered] = field(default_factory=list)
    # The events taken (answered 2xx), in the order they were: duplicates too.
    taken: list[dict[str, Any]] = field(default_factory=list)
    unverified: int = 0
    attempts: Counter[str] = field(default_factory=Counter)
    # Set when a request about `held_order` arrives.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks")
        async def hook(request: Request) -> Response:
            delivered = Delivered(await request.body(), dict(request.headers))
            self.requests.append(delivered)
            try:
                event: dict[str, Any] = Webhook(self.secret).verify(
                    delivered.body, delivered.headers
                )
            except WebhookVerificationError:
                self.unverified += 1
                return Response(status_code=400)
            self.attempts[event["id"]] += 1
            if self.hold is not None and event["data"].get("order_id") == self.held_order:
                self.arrived.set()
                await self.hold.wait()
            failing = self.attempts[event["id"]] <= self.failing_attempts
            if failing or event["type"] in self.refused_types:
                return Response(status_code=500)
            if 200 <= self.answer < 300:
                self.taken.append(event)
            return Response(status_code=self.answer)

        return app

    def taken_once(self) -> list[dict[str, Any]]:
        """The events taken, each once, in the order each was first taken."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.taken:
            seen.setdefault(event["id"], event)
        return list(seen.values())
