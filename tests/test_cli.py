"""`paysaga` as an operator meets it: its commands, its refusals, `db` on a database made before
migrations, and `temporal setup` on a Temporal cluster that lacks our search attributes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from typer.testing import CliRunner

from paysaga.cli import app
from paysaga.dev import Supervisor, wait_for_port
from paysaga.temporal_server import installed_binary
from stack.ports import free_port
from store.schema import FIRST_REVISION, current_revision, head_revision
from tests.databases import made_before_migrations
from workflows import search_attributes

runner = CliRunner()

# What each of our search attributes must be, in the operator service's words.
WANTED = {
    key.name: IndexedValueType.INDEXED_VALUE_TYPE_BOOL
    if key.indexed_value_type == SearchAttributeIndexedValueType.BOOL
    else IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    for key in search_attributes.ALL
}
CONFLICTED = "conflicted"


def test_help_names_every_command() -> None:
    top = runner.invoke(app, ["--help"])
    database = runner.invoke(app, ["db", "--help"])
    cluster = runner.invoke(app, ["temporal", "--help"])

    assert top.exit_code == database.exit_code == cluster.exit_code == 0
    for command in ("dev", "api", "worker", "sandbox", "demo", "db", "temporal"):
        assert f" {command} " in top.stdout
    assert " upgrade " in database.stdout and " stamp " in database.stdout
    assert " setup " in cluster.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    assert runner.invoke(app, ["serve"]).exit_code == 2


@pytest.mark.parametrize(
    "command",
    [["api"], ["demo"], ["db", "upgrade"], ["db", "stamp", "head"], ["temporal", "setup"]],
)
def test_a_refused_configuration_stops_every_command_with_status_2(
    command: list[str], tmp_path: Path
) -> None:
    # Production mode without a database URL, API keys or a gateway.
    env = {"PAYSAGA_MODE": "production", "PAYSAGA_HOME": str(tmp_path)}

    result = runner.invoke(app, command, env=env)

    assert result.exit_code == 2
    assert result.stderr.startswith("paysaga: configuration refused: ")
    assert "production mode needs" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_installed_command_exits_with_the_refusals_status(tmp_path: Path) -> None:
    refused = subprocess.run(
        [installed_binary("paysaga"), "api"],
        env={**os.environ, "PAYSAGA_MODE": "production", "PAYSAGA_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode == 2
    assert refused.stderr.startswith("paysaga: configuration refused: ")
    assert "production mode needs" in refused.stderr


def test_db_upgrade_refuses_a_database_made_before_migrations_until_it_is_stamped(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'paysaga.db'}"
    made_before_migrations(url)
    env = {"PAYSAGA_HOME": str(tmp_path)}

    refused = runner.invoke(app, ["db", "upgrade"], env=env)
    stamped = runner.invoke(app, ["db", "stamp", FIRST_REVISION], env=env)
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)

    assert refused.exit_code == 1
    assert "no migration history" in refused.stderr
    assert f"paysaga db stamp {FIRST_REVISION}" in refused.stderr
    assert stamped.exit_code == 0, stamped.stderr
    assert upgraded.exit_code == 0, upgraded.stderr
    assert current_revision(url) == head_revision()


def test_db_upgrade_to_a_revision_that_does_not_exist_says_so(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["db", "upgrade", "--revision", "9999_nothing"], env={"PAYSAGA_HOME": str(tmp_path)}
    )

    assert result.exit_code == 1
    assert "9999_nothing" in result.stderr


@pytest.fixture(scope="module")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Temporal dev server of our own, started without our search attributes, with a second
    namespace."""
    port = free_port()
    logs = tmp_path_factory.mktemp("temporal-setup")
    supervisor = Supervisor(env=dict(os.environ), log_dir=logs)
    try:
        supervisor.start(
            "temporal",
            [
                *(installed_binary("temporal"), "server", "start-dev", "--headless"),
                *("--ip", "127.0.0.1", "--port", str(port), "--log-level", "warn"),
                *("--namespace", CONFLICTED),
            ],
        )
        wait_for_port("127.0.0.1", port, supervisor=supervisor, name="Temporal")
        yield f"127.0.0.1:{port}"
    finally:
        supervisor.stop()


async def paysaga(home: Path, *args: str) -> tuple[int, str, str]:
    """The installed `paysaga`, as a process of its own: its status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        installed_binary("paysaga"),
        *args,
        env={**os.environ, "PAYSAGA_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def custom_attributes(address: str, namespace: str) -> dict[str, int]:
    client = await Client.connect(address, namespace=namespace)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return dict(listed.custom_attributes)


async def test_temporal_setup_registers_our_search_attributes_once(
    temporal_address: str, tmp_path: Path
) -> None:
    assert not set(WANTED) & set(await custom_attributes(temporal_address, "default"))

    first = await paysaga(tmp_path, "temporal", "setup", "--address", temporal_address)

    assert first[0] == 0, first[2]
    assert await custom_attributes(temporal_address, "default") == WANTED
    assert first[1].count("added") == len(WANTED)
    again = await paysaga(tmp_path, "temporal", "setup", "--address", temporal_address)
    assert again[0] == 0, again[2]
    assert again[1].count("already there") == len(WANTED)
    assert await custom_attributes(temporal_address, "default") == WANTED


async def test_temporal_setup_refuses_an_attribute_of_ours_with_another_type(
    temporal_address: str, tmp_path: Path
) -> None:
    client = await Client.connect(temporal_address, namespace=CONFLICTED)
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=CONFLICTED,
            search_attributes={"Flagged": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
        )
    )
    setup = ("temporal", "setup", "--address", temporal_address, "--namespace", CONFLICTED)

    status, _, err = await paysaga(tmp_path, *setup)

    assert status == 1
    assert "Flagged is Keyword, not Bool" in err
    # Nothing half done: the others wait until the operator has settled it.
    assert await custom_attributes(temporal_address, CONFLICTED) == {
        "Flagged": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    }


async def test_temporal_setup_names_a_namespace_that_does_not_exist(
    temporal_address: str, tmp_path: Path
) -> None:
    setup = ("temporal", "setup", "--address", temporal_address, "--namespace", "nowhere")

    status, _, err = await paysaga(tmp_path, *setup)

    assert status == 1
    assert "namespace nowhere does not exist" in err


async def test_temporal_setup_says_when_temporal_cannot_be_reached(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"

    status, _, err = await paysaga(tmp_path, "temporal", "setup", "--address", address)

    assert status == 1
    assert f"cannot reach Temporal at {address}" in err
