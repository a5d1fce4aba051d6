"""The schema Alembic makes is the one the models describe, data outlives every migration, and
`paysaga db upgrade` gets any database, fresh or not, to head — on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlmodel import SQLModel

from paysaga.temporal_server import installed_binary
from store import orders
from store.db import create_db_engine, transaction
from store.schema import (
    FIRST_REVISION,
    UnversionedDatabaseError,
    alembic_config,
    current_revision,
    head_revision,
    stamp,
    upgrade,
)
from tests.databases import database_url, made_before_migrations

REPOSITORY = Path(__file__).resolve().parent.parent
AT = datetime(2026, 11, 23, 8, 30, 15, 123456, tzinfo=UTC)

# Rows as the first revision's tables hold them: written column by column, never through the
# models, which describe head and may have columns the first revision lacks.
RESERVATION = {
    "id": "room-7",
    "valid_until": AT,
    "payable_order_id": None,
    "created_at": AT,
    "updated_at": AT,
}
PAID_ORDER = {
    "id": "ord_paid",
    "reservation_id": "room-7",
    "kind": "booking",
    "days": 3,
    "amount_cents": 2970,
    "currency": "CNY",
    "status": "paid",
    "status_reason": None,
    "superseded_by": None,
    "gateway": "alipay",
    "qr_code": "https://qr.alipay.com/bax0001",
    "request_fingerprint": "f" * 64,
    "flag_reason": None,
    "expires_at": AT,
    "created_at": AT,
    "updated_at": AT,
}
REFUNDED_ORDER = {
    **PAID_ORDER,
    "id": "ord_refunded",
    "days": 1,
    "amount_cents": 990,
    "status": "refunded",
    "status_reason": "superseded by a newer order",
    "superseded_by": "ord_paid",
    "gateway": "wechatpay",
    "qr_code": "weixin://wxpay/bizpayurl?pr=0001",
}
PAYMENTS = [
    {
        "id": 1,
        "gateway": "alipay",
        "trade_no": "2026112322001",
        "order_id": "ord_paid",
        "amount_cents": 2970,
        "status": "accepted",
        "paid_at": AT,
        "created_at": AT,
        "updated_at": AT,
    },
    {
        "id": 2,
        "gateway": "wechatpay",
        "trade_no": "4200002026112300",
        "order_id": "ord_refunded",
        "amount_cents": 990,
        "status": "refunded",
        "paid_at": AT,
        "created_at": AT,
        "updated_at": AT,
    },
]
REFUND = {
    "gateway": "wechatpay",
    "refund_no": "rf_4200002026112300",
    "payment_id": 2,
    "order_id": "ord_refunded",
    "amount_cents": 990,
    "status": "succeeded",
    "reason": "superseded by a newer order",
    "created_at": AT,
    "completed_at": AT,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    with database_url(request.param, tmp_path) as empty:
        yield empty


def differences(url: str) -> list[Any]:
    """What autogenerate would write into a new migration: the models against the database."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_the_migrations_make_exactly_the_schema_the_models_describe(url: str) -> None:
    assert current_revision(url) is None

    upgrade(url)

    assert current_revision(url) == head_revision()
    assert table_names(url) == set(SQLModel.metadata.tables) | {"alembic_version"}
    assert differences(url) == []


def test_what_the_first_revision_held_is_read_intact_at_head(url: str) -> None:
    upgrade(url, FIRST_REVISION)
    engine = create_db_engine(url)
    try:
        with engine.begin() as connection:
            # The tables as the first revision made them, whatever the models say today.
            tables = MetaData()
            tables.reflect(connection)
            for table, rows in (
                ("reservations", [RESERVATION]),
                ("orders", [PAID_ORDER, REFUNDED_ORDER]),
                ("payments", PAYMENTS),
                ("refunds", [REFUND]),
            ):
                connection.execute(tables.tables[table].insert(), rows)
    finally:
        engine.dispose()

    upgrade(url)

    engine = create_db_engine(url)
    try:
        with transaction(engine) as session:
            reservation = orders.get_reservation(session, "room-7")
            assert reservation is not None
            assert fields(reservation, RESERVATION) == RESERVATION
            assert [fields(o, PAID_ORDER) for o in orders.orders_of(session, "room-7")] == [
                PAID_ORDER,
                REFUNDED_ORDER,
            ]
            read_payments = [
                *orders.payments_of(session, "ord_paid"),
                *orders.payments_of(session, "ord_refunded"),
            ]
            assert [fields(p, PAYMENTS[0]) for p in read_payments] == PAYMENTS
            (refund,) = orders.refunds_of(session, "ord_refunded")
            assert fields(refund, REFUND) == REFUND
    finally:
        engine.dispose()


def fields(row: SQLModel, like: dict[str, Any]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in like}


def test_downgrading_to_nothing_leaves_an_empty_database_that_upgrades_again(url: str) -> None:
    upgrade(url)

    command.downgrade(alembic_config(url), "base")

    assert table_names(url) == {"alembic_version"}
    assert current_revision(url) is None
    upgrade(url)
    assert differences(url) == []


def test_a_database_made_before_migrations_is_upgraded_only_once_stamped(url: str) -> None:
    made_before_migrations(url)

    with pytest.raises(UnversionedDatabaseError, match=f"paysaga db stamp {FIRST_REVISION}"):
        upgrade(url)

    stamp(url, FIRST_REVISION)
    upgrade(url)
    assert current_revision(url) == head_revision()


def paysaga_db(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed_binary("paysaga"), "db", *args],
        env={**os.environ, "PAYSAGA_DATABASE_URL": url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_paysaga_db_upgrade_brings_a_fresh_database_to_head_and_again_changes_nothing(
    url: str, tmp_path: Path
) -> None:
    # Anywhere but the repository: the migrations come from the installed package.
    first = paysaga_db(url, tmp_path, "upgrade")

    assert first.returncode == 0, first.stderr
    assert current_revision(url) == head_revision()
    assert head_revision() in first.stdout
    second = paysaga_db(url, tmp_path, "upgrade")
    assert second.returncode == 0, second.stderr
    assert "already" in second.stdout
    assert current_revision(url) == head_revision()
    assert differences(url) == []


def test_alembic_from_the_repository_finds_nothing_the_migrations_lack(tmp_path: Path) -> None:
    """How a developer checks a new migration (store/schema.py): `alembic check` from the
    repository root, against the database in PAYSAGA_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'paysaga.db'}"
    upgrade(url)

    checked = subprocess.run(
        [installed_binary("alembic"), "check"],
        env={**os.environ, "PAYSAGA_DATABASE_URL": url},
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
