"""The Temporal client every paysaga process builds from its settings, and how its failures
read."""

from __future__ import annotations

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, FailureError

from core.settings import Settings


async def connect_temporal(settings: Settings, *, lazy: bool = False) -> Client:
    """Lazy for the API: it starts, and answers 503 with a reason, while Temporal is down."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )


def failure_reason(failure: ActivityError | WorkflowUpdateFailedError) -> str:
    """What went wrong, in the words of the step that failed (its ApplicationError's message)
    rather than Temporal's wrapper around it."""
    cause = failure.cause
    return cause.message if isinstance(cause, FailureError) else str(failure)
