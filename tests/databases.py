"""Real databases for tests: a SQLite file, and a fresh schema on the local PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from store.db import create_db_engine
from store.schema import FIRST_REVISION, upgrade

# What the checkout pages' URLs, in the events of orders, begin with.
PUBLIC_BASE_URL = "https://pay.example.com"
POSTGRES_URL = os.environ.get(
    "PAYSAGA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty paysaga database of this kind, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'paysaga.db'}"
        return
    schema = "paysaga_test_" + uuid.uuid4().hex[:12]
    admin = create_db_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


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
