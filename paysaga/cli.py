"""`paysaga`: run the system's processes, and set up what they need.

Exit status: 0 done, 1 failed, 2 a command line or a configuration that was refused
(`paysaga: configuration refused: …` on stderr).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from api.timeline import Timeline

app = typer.Typer(
    name="paysaga",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    # Help from docstrings, whose lines are wrapped in the source, not where they break.
    rich_markup_mode="markdown",
    # A traceback's locals may hold API keys and database passwords.
    pretty_exceptions_show_locals=False,
)
db = typer.Typer(
    help="The database schema, made and changed by migrations (PAYSAGA_DATABASE_URL).",
    no_args_is_help=True,
)
temporal = typer.Typer(
    help="An existing Temporal cluster (PAYSAGA_TEMPORAL_*).", no_args_is_help=True
)
orders_app = typer.Typer(help="Orders, as operators see them.", no_args_is_help=True)
app.add_typer(db, name="db")
app.add_typer(temporal, name="temporal")
app.add_typer(orders_app, name="orders")


def main(argv: list[str] | None = None) -> int:
    """The console script: runs the command, and returns the status to exit with."""
    try:
        app(args=argv, prog_name="paysaga")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    return 0


@app.command()
def dev() -> None:
    """Run everything locally: Temporal and its Web UI, the sandbox, a worker and the API."""
    from paysaga.dev import run_dev

    settings = _settings()
    # Its first step is `db upgrade`'s, and fails as that does.
    with _database_failures():
        status = run_dev(settings)
    raise typer.Exit(status)


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    settings = _settings()
    import uvicorn

    from api.app import create_app
    from core.logs import logging_config

    try:
        served = create_app(settings)
    except SettingsError as refused:
        _refuse(str(refused))
    # uvicorn drains on SIGTERM (the requests in flight are answered), then raises it again to
    # die of it: a drained stop is a clean one.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The API judges who sent a request by PAYSAGA_TRUSTED_PROXIES alone: uvicorn must not
    # rewrite the peer from X-Forwarded-For before it sees it.
    uvicorn.run(
        served,
        host=settings.api_host,
        port=settings.api_port,
        proxy_headers=False,
        log_config=logging_config(settings),
    )


@app.command()
def worker() -> None:
    """Run the order sagas (the same as `python worker.py`)."""
    _settings()
    from paysaga import worker

    worker.main()


@app.command()
def sandbox() -> None:
    """Serve the sandbox gateway: Alipay's and WeChat Pay's side of the wire."""
    from sandbox.app import serve
    from sandbox.settings import SandboxSettings

    serve(SandboxSettings())


@app.command()
def demo(
    api_url: Annotated[str | None, typer.Option(help="Default: PAYSAGA_PUBLIC_BASE_URL.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Default: the dev mode's key.")] = None,
) -> None:
    """Drive a running system through the order scenarios."""
    from paysaga.demo import run_demo

    raise typer.Exit(run_demo(_settings(), api_url=api_url, api_key=api_key))


@db.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="The migration to stop at.")] = "head",
) -> None:
    """Bring the database to the newest migration (or --revision); at it already, nothing."""
    from store import schema

    url = _settings().resolved_database_url
    with _database_failures():
        before = schema.current_revision(url)
        schema.upgrade(url, revision)
        after = schema.current_revision(url)
    if before == after:
        _say(f"database already at {after}")
    else:
        _say(f"database upgraded from {before or 'nothing'} to {after}")


@db.command("stamp")
def db_stamp(
    revision: Annotated[str, typer.Argument(help="The migration whose schema it holds.")],
) -> None:
    """Record that the database holds REVISION's schema, changing nothing else: for a
    database made before migrations (`paysaga db upgrade` says when)."""
    from store import schema

    url = _settings().resolved_database_url
    with _database_failures():
        schema.stamp(url, revision)
    _say(f"database recorded at {revision}")


@temporal.command("setup")
def temporal_setup(
    address: Annotated[str | None, typer.Option(help="Default: PAYSAGA_TEMPORAL_ADDRESS.")] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Default: PAYSAGA_TEMPORAL_NAMESPACE.")
    ] = None,
) -> None:
    """Register paysaga's search attributes on a Temporal cluster; running it again is
    harmless. The namespace must exist."""
    from workflows import search_attributes

    overrides = {"temporal_address": address, "temporal_namespace": namespace}
    settings = _settings().model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    try:
        outcome = asyncio.run(_register_search_attributes(settings))
    except SettingsError as refused:
        _refuse(str(refused))
    if isinstance(outcome, str):
        _complain(outcome)
        _leave_now(1)
    table = Table(
        title=f"search attributes of {settings.temporal_namespace} at {settings.temporal_address}"
    )
    for column in ("name", "type", "status"):
        table.add_column(column)
    for key in search_attributes.ALL:
        kind = key.indexed_value_type.name.capitalize()
        table.add_row(key.name, kind, "added" if key.name in outcome else "already there")
    Console().print(table)
    _leave_now(0)


async def _register_search_attributes(settings: Settings) -> list[str] | str:
    """The names added, or why none could be."""
    from temporalio.service import RPCError

    from core.temporal import connect_temporal
    from paysaga.temporal_server import SearchAttributesRefused, register_search_attributes

    try:
        client = await connect_temporal(settings)
    except RuntimeError as failure:
        return f"cannot reach Temporal at {settings.temporal_address}: {failure}"
    try:
        return await register_search_attributes(client, settings.temporal_namespace)
    except SearchAttributesRefused as refused:
        return str(refused)
    except RPCError as failure:
        return f"Temporal at {settings.temporal_address} answered: {failure.message}"


@orders_app.command("show")
def orders_show(order_id: Annotated[str, typer.Argument(help="The order's id (ord_…).")]) -> None:
    """An order's story, every step in time order, read from the database and Temporal."""
    timeline = asyncio.run(_timeline(_settings(), order_id))
    if timeline is None:
        _complain(f"no order {order_id!r}")
        _leave_now(1)
    table = Table(title=f"order {timeline.order_id}: {timeline.status}")
    for column in ("time (UTC)", "source", "what", "detail"):
        table.add_column(column, overflow="fold")
    for entry in timeline.entries:
        table.add_row(f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.source, entry.event, entry.detail)
    console = Console()
    console.print(table)
    for gap in timeline.gaps:
        _complain(f"not shown: {gap}")
    _leave_now(0)


async def _timeline(settings: Settings, order_id: str) -> Timeline | None:
    from api.timeline import order_timeline
    from core.temporal import connect_temporal
    from store.db import create_db_engine

    engine = create_db_engine(settings.resolved_database_url)
    try:
        return await order_timeline(engine, await connect_temporal(settings, lazy=True), order_id)
    finally:
        engine.dispose()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as invalid:
        _refuse("; ".join(str(error["msg"]) for error in invalid.errors()))


@contextmanager
def _database_failures() -> Iterator[None]:
    """What goes wrong with the database or a migration, said in a line, not a traceback."""
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from store.schema import UnversionedDatabaseError

    try:
        yield
    except OperationalError as failure:
        _fail(f"cannot use the database: {failure.orig}")
    except (UnversionedDatabaseError, CommandError) as failure:
        _fail(str(failure))


def _refuse(reason: str) -> NoReturn:
    _fail(f"configuration refused: {reason}", status=2)


def _fail(message: str, *, status: int = 1) -> NoReturn:
    _complain(message)
    raise typer.Exit(status)


def _complain(message: str) -> None:
    # Whole lines, however narrow the terminal: they end up in logs that are searched.
    Console(stderr=True).print(Text(f"paysaga: {message}", style="red"), soft_wrap=True)


def _leave_now(status: int) -> NoReturn:
    """Exit without the interpreter's finalization, once the Temporal SDK has been used: its
    native threads may still be letting go of the client then, which aborts a finalizing
    interpreter (sdk-python #300; seen here as status 134 after a command had done its work)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _say(message: str) -> None:
    Console().print(Text(message), soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
