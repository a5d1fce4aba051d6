"""How Alembic reaches the database: run by `store.schema` (the URL in the config's attributes)
or by the `alembic` command from the repository root (the URL from paysaga's settings).

The whole upgrade is one transaction on both databases, SQLite included (Alembic would commit
there after each step): a failed step leaves the database as it was. On SQLite, foreign keys
are off while migrating, because batch mode alters a table by copying it, dropping the old one
and renaming the copy, and with them on the drop would fail, or cascade, for every row that
refers to it; they are checked as a whole before the commit instead.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from core.settings import Settings
from store.db import create_db_engine
from store.models import UTCDateTime


def render_item(type_: str, item: Any, _: AutogenContext) -> str | Literal[False]:
    """Migrations name plain SQLAlchemy types, never ours: a migration is a record of what was
    created then, which a later change to a model's Python type must not rewrite."""
    if type_ == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    return False


def _foreign_keys_off(dbapi_connection: sqlite3.Connection, _: ConnectionPoolEntry) -> None:
    # Only outside a transaction does SQLite heed this, so on connecting.
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.execute(text("PRAGMA foreign_key_check")).all()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise RuntimeError(f"the migration broke foreign keys in {', '.join(tables)}")


def run_migrations() -> None:
    url = context.config.attributes.get("url") or Settings().resolved_database_url
    engine = create_db_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        event.listen(engine, "connect", _foreign_keys_off)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=sqlite,
                transactional_ddl=True,
                render_item=render_item,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
    finally:
        engine.dispose()


run_migrations()
