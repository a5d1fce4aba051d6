"""Recording histories for the replay test: one for each distinct path a saga took."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory


async def all_histories(client: Client) -> list[WorkflowHistory]:
    return [
        await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        async for execution in client.list_workflows()
    ]


def record_distinct_paths(histories: list[WorkflowHistory]) -> None:
    """With PAYSAGA_RECORD_HISTORIES=DIR, write one history of each path into DIR."""
    record = os.environ.get("PAYSAGA_RECORD_HISTORIES")
    if not record:
        return
    Path(record).mkdir(parents=True, exist_ok=True)
    for history in distinct_paths(histories):
        (Path(record) / f"{history.workflow_id}.json").write_text(history.to_json())


def distinct_paths(histories: list[WorkflowHistory]) -> list[WorkflowHistory]:
    """One history for each sequence of steps and messages a saga went through."""
    paths: dict[tuple[str, ...], WorkflowHistory] = {}
    for history in histories:
        started = history.events[0].workflow_execution_started_event_attributes
        # The same steps on another gateway carry other payloads: one history of each.
        path = [started.workflow_type.name, _gateway(started.input.payloads)]
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                path.append(event.activity_task_scheduled_event_attributes.activity_type.name)
            elif event.HasField("workflow_execution_signaled_event_attributes"):
                path.append(event.workflow_execution_signaled_event_attributes.signal_name)
            elif event.HasField("workflow_execution_update_accepted_event_attributes"):
                accepted = event.workflow_execution_update_accepted_event_attributes
                path.append(accepted.accepted_request.input.name)
        paths.setdefault(tuple(path), history)
    return list(paths.values())


def _gateway(payloads: Sequence[Payload]) -> str:
    if not payloads:
        return ""
    try:
        data = json.loads(payloads[0].data)
    except ValueError:
        return ""
    return str(data.get("gateway", "")) if isinstance(data, dict) else ""
