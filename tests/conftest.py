from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from stack.system import API_KEY, System, running_system
from tests.databases import database, database_url
from tests.rig import Rig, Sandbox, running_worker
from tests.system import DATABASE_KIND, Shop


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as engine:
        yield engine


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = exitstatus


def pytest_unconfigure(config: pytest.Config) -> None:
    # The Temporal SDK's native runtime can abort the interpreter at exit after every test
    # passed (sdk-python #300); leave with pytest's own verdict, whatever it is, instead.
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture
async def rig(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Rig]:
    """A worker on its own task queue of the module's Temporal server (its `env` fixture)."""
    async with running_worker(env.client, tmp_path, f"rig-{uuid.uuid4()}") as rig:
        yield rig


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The whole system as processes, on PAYSAGA_TEST_DATABASE: one for every slow test that
    does not need one of its own."""
    home = tmp_path_factory.mktemp("system")
    with database_url(DATABASE_KIND, home) as url, running_system(home, url) as running:
        yield running


@pytest.fixture(scope="session")
async def shop(system: System) -> AsyncIterator[Shop]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        yield Shop(http, system)


@pytest.fixture(scope="session")
async def sandbox(system: System) -> AsyncIterator[Sandbox]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield Sandbox(http, system.sandbox_url)
