"""Recording histories for the replay test: one for each distinct path a saga took."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client, WorkflowHistory


async def all_histories(client: Client) -> list[WorkflowHistory]:
    """Every workflow's history, its payloads decrypted by the client's codec: a recorded
    history must replay without the key of the run that recorded it."""
    histories = [
        await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        async for execution in client.list_workflows()
    ]
    codec = client.data_converter.payload_codec
    found = [payload for history in histories for payload in payloads_in(*history.events)]
    if codec is not None and found:
        for payload, decoded in zip(found, await codec.decode(found), strict=True):
            if decoded is not payload:
                payload.CopyFrom(decoded)
    return histories


def payloads_in(*messages: Message, skipping: frozenset[str] = frozenset()) -> Iterator[Payload]:
    """Every payload within the messages, however deep, but for fields named in `skipping`."""
    for message in messages:
        if isinstance(message, Payload):
            yield message
            continue
        for field, value in message.ListFields():
            kind = field.message_type  # None for scalars
            if kind is None or field.name in skipping:
                continue
            if kind.GetOptions().map_entry:
                if kind.fields_by_name["value"].message_type is not None:
                    yield from payloads_in(*value.values(), skipping=skipping)
            elif field.is_repeated:
                yield from payloads_in(*value, skipping=skipping)
            else:
                yield from payloads_in(value, skipping=skipping)


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
            elif event.HasField("marker_recorded_event_attributes"):
                path.append(_marker(event.marker_recorded_event_attributes))
        paths.setdefault(tuple(path), history)
    return list(paths.values())


def _marker(marker: MarkerRecordedEventAttributes) -> str:
    """A patch by its id, a local activity by its type: each a step of its own."""
    for details in marker.details.values():
        for payload in details.payloads:
            try:
                data = json.loads(payload.data)
            except ValueError:
                continue
            if isinstance(data, dict) and (name := data.get("id") or data.get("activity_type")):
                return f"{marker.marker_name} {name}"
    return str(marker.marker_name)


def _gateway(payloads: Sequence[Payload]) -> str:
    if not payloads:
        return ""
    try:
        data = json.loads(payloads[0].data)
    except ValueError:
        return ""
    return str(data.get("gateway", "")) if isinstance(data, dict) else ""
