"""Calls from the API to Temporal: when Temporal cannot be reached, the answer is a 503."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from api.problems import ApiProblem


def is_not_found(failure: RPCError) -> bool:
    return failure.status == RPCStatusCode.NOT_FOUND


@contextmanager
def reaching_temporal(consequence: str) -> Iterator[None]:
    """Turn "Temporal is down" into 503 with `consequence` said; NOT_FOUND passes through."""
    try:
        yield
    except RPCError as failure:
        if is_not_found(failure):
            raise
        raise ApiProblem(
            503, f"{consequence}: Temporal is unavailable ({failure.message})"
        ) from failure
    except WorkflowUpdateRPCTimeoutOrCancelledError as failure:
        # Temporal is up, but no worker moved the saga in time.
        raise ApiProblem(503, f"{consequence}: no answer in time, try again") from failure
    except RuntimeError as failure:
        # The SDK's lazy client raises this, not an RPCError, when it cannot connect at all.
        if "client connect" not in str(failure):
            raise
        raise ApiProblem(503, f"{consequence}: Temporal is unreachable") from failure


def retrieve_start_failure(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Read the error an update-with-start parked for the start, if it failed.

    The SDK sets it on a future that only `start.workflow_handle()` reads; nobody reads it when
    the update failed too, and asyncio then logs "Future exception was never retrieved" with
    a traceback for every order tried while Temporal was down.
    """
    handle = start._workflow_handle
    if handle.done() and not handle.cancelled():
        handle.exception()
