"""Log lines as paysaga's processes write them (`PAYSAGA_LOG_FORMAT`): text for people, or JSON
for a log pipeline.

In JSON each line is one object: `time` (UTC, ISO 8601), `level`, `logger`, `message`, then
`order_id`, `trade_no` and `workflow_id` where they apply, and `exception` with its traceback.
Those ids come from a record's `extra=`; in a workflow from the Temporal SDK's workflow logger,
which adds its details as `temporal_workflow`; in an activity from its logger's
`temporal_activity`, and, whatever logger is used there, from the running activity's info.

What a line may hold: messages and ids, never a request's headers, an API key or a gateway's
key. Nothing here logs requests; uvicorn's access log names the request line only.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from core.settings import Settings

CONTEXT_FIELDS = ("order_id", "trade_no", "workflow_id")
# Where the Temporal SDK's own loggers put the running workflow's or activity's details.
SDK_DETAILS = ("temporal_workflow", "temporal_activity")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _context(record: logging.LogRecord) -> dict[str, str]:
    context: dict[str, str] = {}
    if activity.in_activity():
        # Any logger, not only the SDK's: the record is made in the activity's own context.
        workflow_id = activity.info().workflow_id
        if workflow_id is not None:
            context["workflow_id"] = workflow_id
    for name in SDK_DETAILS:
        details = getattr(record, name, None)
        if isinstance(details, Mapping) and details.get("workflow_id") is not None:
            context["workflow_id"] = str(details["workflow_id"])
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            context[name] = str(value)
    return context


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the process (uvicorn takes it as `log_config`): one
    handler, on stderr, in the chosen format; uvicorn's loggers write through it too."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.resolved_log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"paysaga": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "paysaga",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        # Without their own handlers, so that each line is written once, by the root's.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
