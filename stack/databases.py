"""A database of its own for each run: a SQLite file, or a fresh schema on a PostgreSQL server,
dropped afterwards, so that runs sharing the server never see each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from store.db import create_db_engine

LOCAL_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def own_database_url(
    kind: str, directory: Path, *, purpose: str, postgres_url: str = LOCAL_POSTGRES_URL
) -> Iterator[str]:
    """A URL to an empty database of this kind (`sqlite` or `postgresql`), dropped afterwards.

    On PostgreSQL a schema named for `purpose` (`paysaga_<purpose>_<random>`), reached through
    the URL's search_path; on SQLite a file in `directory`.
    """
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'paysaga.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"no database of kind {kind!r}: sqlite or postgresql")
    schema = f"paysaga_{purpose}_{uuid.uuid4().hex[:12]}"
    admin = create_db_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
