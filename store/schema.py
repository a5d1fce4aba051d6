"""The database schema, owned by Alembic: its migrations are store/migrations/versions, the
first (0001_initial) the schema as it stood when migrations began.

No process makes tables: each expects the schema at head. `paysaga db upgrade` brings it
there — a job run before the API and the workers in production, a step of `paysaga dev` on a
laptop — and is idempotent. A database paysaga made before migrations has the tables but no
record of a revision: upgrading it is refused, since the first migration would try to create
them again; `paysaga db stamp 0001_initial` records that it already holds that revision's
schema (only if it does: one from before WeChat Pay lacks the refunds' gateway key).

A new migration, once store/models.py holds the change, from the repository root:

    .venv/bin/paysaga db upgrade        # the dev database at head: what the models are
                                        # compared with
    .venv/bin/alembic revision --autogenerate --rev-id 0002_<what> -m "<what it does>"

then read the file it writes into store/migrations/versions/ and mend what autogenerate
cannot know (renames, data to move); `.venv/bin/alembic check` says nothing is left over.
On SQLite, operations on existing tables must be inside `op.batch_alter_table` (autogenerate
writes them so), since SQLite alters little in place.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.db import create_db_engine

FIRST_REVISION = "0001_initial"


class UnversionedDatabaseError(RuntimeError):
    """The database has paysaga's tables but no migration history."""


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration, from code: no alembic.ini, no working directory; the
    migrations are found inside the installed package."""
    config = Config()
    config.set_main_option("script_location", "store:migrations")
    if url is not None:
        # Not `sqlalchemy.url`: options are interpolated, and a URL may hold `%` escapes.
        config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """The database brought to `revision`; nothing done where it is there already."""
    _refuse_unversioned_tables(url)
    command.upgrade(alembic_config(url), revision)


def stamp(url: str, revision: str) -> None:
    """Record that the database holds `revision`'s schema, without changing it."""
    command.stamp(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "store/migrations/versions holds no migration"
    return head


def _refuse_unversioned_tables(url: str) -> None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            if MigrationContext.configure(connection).get_current_revision() is not None:
                return
            ours = set(inspect(connection).get_table_names()) & set(SQLModel.metadata.tables)
    finally:
        engine.dispose()
    if ours:
        raise UnversionedDatabaseError(
            f"the database has paysaga's tables ({', '.join(sorted(ours))}) but no migration "
            "history: it was made before migrations. If it holds the whole schema of "
            f"{FIRST_REVISION}, record so with `paysaga db stamp {FIRST_REVISION}`, then "
            "upgrade; otherwise make it anew"
        )
