"""The Temporal client every paysaga process builds from its settings."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import Settings


async def connect_temporal(settings: Settings, *, lazy: bool = False) -> Client:
    """Lazy for the API: it starts, and answers 503 with a reason, while Temporal is down."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )
