"""JSON log lines: the fields every line has, and the ids a line carries from `extra=`, from the
Temporal SDK's workflow and activity loggers, and from any logger inside an activity."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from core.logs import JsonFormatter
from core.settings import Settings
from paysaga.temporal_server import installed_binary


class Lines(logging.Handler):
    """The lines our formatter makes of what these loggers say, parsed back."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    loggers = [logging.getLogger(name) for name in ("paysaga.test", "temporalio")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler.lines
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_a_line_is_one_object_with_time_level_logger_message_and_the_ids_given(
    lines: list[dict[str, Any]],
) -> None:
    logger = logging.getLogger("paysaga.test")
    logger.warning("order %s: 订单 paid twice", "ord_1", extra={"order_id": "ord_1", "trade_no": 7})
    logger.info("nothing to say about any order")
    try:
        raise RuntimeError("the gateway hung up")
    except RuntimeError:
        logger.exception("refund failed", extra={"order_id": "ord_2"})

    first, plain, failure = lines
    assert set(first) == {"time", "level", "logger", "message", "order_id", "trade_no"}
    assert first["level"] == "WARNING" and first["logger"] == "paysaga.test"
    assert first["message"] == "order ord_1: 订单 paid twice"
    assert (first["order_id"], first["trade_no"]) == ("ord_1", "7")
    stamped = datetime.fromisoformat(first["time"])
    assert stamped.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)
    assert set(plain) == {"time", "level", "logger", "message"}
    assert failure["order_id"] == "ord_2"
    assert "RuntimeError: the gateway hung up" in failure["exception"]


def test_the_format_is_text_in_dev_and_json_in_production_unless_chosen() -> None:
    assert Settings().resolved_log_format == "text"
    assert Settings(log_format="json").resolved_log_format == "json"
    # Production's own checks (gateways, keys) are not what is looked at here.
    assert Settings.model_construct(mode="production").resolved_log_format == "json"
    assert Settings.model_construct(mode="production", log_format="text").resolved_log_format == (
        "text"
    )


@activity.defn
def record_in_the_database(order_id: str) -> None:
    # As the database activities are: synchronous, on a worker thread, with a plain logger.
    logging.getLogger("paysaga.test").info(
        "recorded", extra={"order_id": order_id, "trade_no": "T1"}
    )


@activity.defn
async def ask_the_gateway(order_id: str) -> None:
    activity.logger.info("asked about %s", order_id)


@workflow.defn
class LoggingWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> None:
        workflow.logger.info("started", extra={"order_id": order_id})
        for step in (record_in_the_database, ask_the_gateway):
            await workflow.execute_activity(
                step, order_id, start_to_close_timeout=timedelta(seconds=10)
            )


async def test_lines_from_workflows_and_activities_name_the_workflow(
    lines: list[dict[str, Any]],
) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server")
    )
    task_queue = f"logs-{uuid.uuid4()}"
    workflow_id = f"order-{uuid.uuid4()}"
    try:
        with ThreadPoolExecutor(max_workers=2) as executor:
            async with Worker(
                env.client,
                task_queue=task_queue,
                workflows=[LoggingWorkflow],
                activities=[record_in_the_database, ask_the_gateway],
                activity_executor=executor,
                # What is looked at is the SDK's loggers, not the workflow sandbox.
                workflow_runner=UnsandboxedWorkflowRunner(),
            ):
                await env.client.execute_workflow(
                    LoggingWorkflow.run, "ord_7", id=workflow_id, task_queue=task_queue
                )
    finally:
        await env.shutdown()

    said = {line["message"].split(" (")[0]: line for line in lines}
    assert said["started"]["logger"] == "temporalio.workflow"
    assert said["started"]["workflow_id"] == workflow_id
    assert said["started"]["order_id"] == "ord_7"
    assert said["recorded"]["workflow_id"] == workflow_id
    assert (said["recorded"]["order_id"], said["recorded"]["trade_no"]) == ("ord_7", "T1")
    assert said["asked about ord_7"]["logger"] == "temporalio.activity"
    assert said["asked about ord_7"]["workflow_id"] == workflow_id
