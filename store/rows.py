"""Row helpers every data access module shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel


def insert_ignoring_conflict(
    session: Session,
    table: type[SQLModel],
    values: Mapping[str, Any],
    *,
    conflict_on: list[str],
) -> bool:
    """Insert the row unless one with the same `conflict_on` key exists; True if inserted.

    Concurrent first notices of one trade, or first orders of one reservation, race to insert
    the same row; the loser must see the winner's row, not an IntegrityError.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict_on)
        # psycopg reports no rowcount here: a returned row is how the winner knows it won.
        .returning(table.__table__.c[conflict_on[0]])  # type: ignore[attr-defined]
    )
    return session.exec(statement).first() is not None
