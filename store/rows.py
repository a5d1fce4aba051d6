"""Row helpers every data access module shares."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import cache
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel

from store.models import Order, Reservation

# The tables whose changes store.events records: it sees only what a session flushes.
RECORDED_TABLES = (Order.__tablename__, Reservation.__tablename__)


class UnrecordedChange(Exception):
    """A statement would change orders or reservations out of the recorder's sight."""


def refuse_unrecorded(table: str, *, inserted: Collection[str] | None) -> None:
    """Refuse a plain statement on orders or reservations: store.events sees only the changes
    a session flushes, so the statement's would go without their events. `inserted` is the
    columns an INSERT sets (None for an UPDATE or DELETE): a new reservation without a validity
    is neither activated nor extended, and tells nothing."""
    if (
        table == Reservation.__tablename__
        and inserted is not None
        and "valid_until" not in inserted
    ):
        return
    if table in RECORDED_TABLES:
        raise UnrecordedChange(
            f"a bulk statement on {table} would change it without its events: change the rows "
            "themselves, in a transaction"
        )


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
    refuse_unrecorded(table.__tablename__, inserted=values.keys())  # type: ignore[arg-type]
    statement = _insert_ignoring(session.get_bind().dialect.name, table, tuple(conflict_on))
    # On the connection, not through the session: the ORM's bulk path costs more than the
    # statement itself on the callback door, and no row of the session is affected.
    return session.connection().execute(statement, dict(values)).first() is not None


@cache
def _insert_ignoring(dialect: str, table: type[SQLModel], conflict_on: tuple[str, ...]) -> Insert:
    # Built once: the values come as parameters, so SQLAlchemy's compiled form is reused
    # without working out the statement's cache key again on every call.
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(table)
        .on_conflict_do_nothing(index_elements=list(conflict_on))
        # psycopg reports no rowcount here: a returned row is how the winner knows it won.
        .returning(table.__table__.c[conflict_on[0]])  # type: ignore[attr-defined]
    )
