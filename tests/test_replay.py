"""Determinism: recorded histories of the full-stack scenarios replay on today's workflow code.

tests/histories holds one history of each distinct path the sagas took in a full-stack run
(record anew with `PAYSAGA_RECORD_HISTORIES=DIR pytest -m slow`). A change that would make a
running saga take another path on replay fails here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from paysaga.worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"


async def recorded() -> AsyncIterator[WorkflowHistory]:
    for path in sorted(HISTORIES.glob("*.json")):
        yield WorkflowHistory.from_json(path.stem, path.read_text())


async def test_recorded_histories_replay() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 10
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    results = await replayer.replay_workflows(recorded(), raise_on_replay_failure=False)
    assert results.replay_failures == {}
