"""Recording histories for the replay test: one for each distinct path a saga took."""

from __future__ import annotations

import os
from pathlib import Path

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
        path = [history.events[0].workflow_execution_started_event_attributes.workflow_type.name]
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
