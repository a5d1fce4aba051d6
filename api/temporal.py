"""Calls from the API to Temporal: when Temporal cannot be reached, the answer is a 503."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
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
