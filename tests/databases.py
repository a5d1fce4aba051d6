"""Real databases for tests: a SQLite file, and a fresh schema on the local PostgreSQL
(`PAYSAGA_TEST_POSTGRES_URL` names another)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine

from stack.databases import LOCAL_POSTGRES_URL, own_database_url
from store.db import create_db_engine
from store.schema import FIRST_REVISION, upgrade

# What the checkout pages' URLs, in the events of orders, begin with.
PUBLIC_BASE_URL = "https://pay.example.com"
POSTGRES_URL = os.environ.get("PAYSAGA_TEST_POSTGRES_URL", LOCAL_POSTGRES_URL)


def database_url(kind: str, tmp_path: Path) -> AbstractContextManager[str]:
    """A URL to an empty paysaga database of this kind, dropped afterwards."""
    return own_database_url(kind, tmp_path, purpose="test", postgres_url=POSTGRES_URL)


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[Engine]:
    with database_url(kind, tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url, public_base_url=PUBLIC_BASE_URL)
        try:
            yield engine
        finally:
            engine.dispose()


def made_before_migrations(url: str) -> None:
    """Make the database an older paysaga left: the first migration's tables, made by
    `create_all` then, and no record of any migration."""
    upgrade(url, FIRST_REVISION)
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
