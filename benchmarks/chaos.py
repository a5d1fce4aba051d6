"""`make chaos`: the whole system under a bounded load while its processes crash and the gateway
misbehaves, then proof that no order and no money was lost.

    python -m benchmarks.chaos [--orders 1000] [--database postgresql|sqlite] [--seed N]

1. Starts the system as `stack.system` runs it (the Temporal dev server with a state file, the
   sandbox, two workers, two APIs with a payment timeout of `--payment-timeout` seconds and one
   with 4 s) on a database of its own: a fresh PostgreSQL schema, dropped afterwards, or a
   SQLite file. Reconciliation runs every 10 s; trades stay payable 5 s past their orders'
   deadlines (not an hour), so that every saga's last question to the gateway comes within
   the run; an order has 20 s to get its QR code, as by default.
2. The load (`benchmarks.chaos_load`): at least `--orders` orders over many reservations, on
   both gateways, paced to span the faults, every notification sent twice.
3. The faults, one after another while the load runs, each logged with its time: a worker
   SIGKILLed and restarted; an API; the Temporal dev server; the database cut off for 10 s
   (PostgreSQL only: SQLite has no connection to cut); then the sandbox failing 30 % of
   gateway calls (a third each as a system error, as no answer, and as a system error after
   the call took effect) and dropping 20 % of notifications.
4. Faults off; reconciliation run at once; a bounded wait until every order has settled;
   reconciliation run again, and the wait again.
5. The checks (`benchmarks.chaos_checks`), by our books and by the sandbox's.
It prints the timeline, a table of the counts and every violation, and exits 1 on any.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.chaos_checks import Books, check, read_books, settle
from benchmarks.chaos_load import App, FaultsFired, Journal, plan_stories, run_load
from benchmarks.order_flow import IDLE_CONNECTION_SECONDS
from core.contracts import Reconciliation, ReconciliationReport
from core.settings import Settings
from paysaga.demo import print_table
from paysaga.dev import interrupt_on_sigterm
from stack.databases import LOCAL_POSTGRES_URL, own_database_url
from stack.system import API_KEY, TASK_QUEUE, System, running_system
from workflows.reconcile import ReconcileWorkflow

RECONCILE_EVERY_SECONDS = 10
# A trade stays payable at the gateway this long past its order's deadline (an hour unless
# told): a saga asks the gateway about its unpaid order once it can no longer be paid, and
# that must come within the run.
DEADLINE_EXTENSION_SECONDS = 5
# Orders get their QR code within the production budget, not the slow tests' 3 s: on a loaded
# machine the shorter one turns crashes' backlog into a storm of refused orders.
CREATE_TIMEOUT_SECONDS = Settings.model_fields["payment_create_timeout_seconds"].default
# A process is down this long before it is started again.
DOWN_SECONDS = 2.0
GATEWAY_FAIL_RATE = 0.3
NOTIFICATION_DROP_RATE = 0.2
GATEWAY_FAIL_MODES = ("system_error", "http_503", "applied_then_system_error")
# The gateway's faults stay on past their planned time, until they have fired, this long at most.
GATEWAY_FAULTS_LONGEST_SECONDS = 60.0
# The whole load long, every notification goes out twice.
LOAD_FAULTS: dict[str, Any] = {"duplicate_notifications": 2}
# Past the last deadline, how long the sagas, the sandbox's resending and reconciliation get.
SETTLE_MARGIN_SECONDS = 90.0


@dataclass(frozen=True)
class Drill:
    """How big and how rough a run is."""

    orders: int = 1000
    database: str = "postgresql"
    seed: int = 1
    # The load is spread over this long; the faults come at even steps within it.
    load_seconds: float = 150.0
    payment_timeout_seconds: int = 60
    database_cut_seconds: float = 10.0
    gateway_fault_seconds: float = 24.0


@dataclass
class ChaosReport:
    drill: Drill
    counts: Counter[str] = field(default_factory=Counter)
    orders_by_status: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_chaos(drill: Drill, *, postgres_url: str = LOCAL_POSTGRES_URL) -> ChaosReport:
    """Run the drill on a system of its own, on a database of its own (on PostgreSQL, a schema
    made for it on the server `postgres_url` names); the report says what happened."""
    started = time.monotonic()
    # Kept if anything goes wrong, for whoever looks into it: each process's log, Temporal's
    # state file.
    home = Path(tempfile.mkdtemp(prefix="paysaga-chaos-"))
    env = {
        "PAYSAGA_RECONCILE_EVERY_SECONDS": str(RECONCILE_EVERY_SECONDS),
        "PAYSAGA_RECONCILE_AFTER_SECONDS": str(RECONCILE_EVERY_SECONDS),
        "PAYSAGA_DEADLINE_EXTENSION_SECONDS": str(DEADLINE_EXTENSION_SECONDS),
        "PAYSAGA_PAYMENT_CREATE_TIMEOUT_SECONDS": str(CREATE_TIMEOUT_SECONDS),
    }
    with (
        own_database_url(drill.database, home, purpose="chaos", postgres_url=postgres_url) as url,
        running_system(
            home, url, payment_timeout_seconds=drill.payment_timeout_seconds, env=env
        ) as system,
    ):
        report = asyncio.run(_drill(system, drill))
    report.seconds = time.monotonic() - started
    if not report.violations:
        shutil.rmtree(home)
    return report


async def _drill(system: System, drill: Drill) -> ChaosReport:
    journal = Journal()
    # A request that fails unanswered on a connection closing as it is sent would be, to a
    # buyer paying, a payment neither made nor refused.
    limits = httpx.Limits(
        max_connections=200, max_keepalive_connections=50, keepalive_expiry=IDLE_CONNECTION_SECONDS
    )
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60, limits=limits
    ) as http:
        app = App(http, system, journal)
        journal.note(f"the system's logs: {system.logs}")
        stories = plan_stories(drill.orders, drill.seed)
        journal.note(
            f"load: {sum(len(story.gateways) for story in stories)} orders in {len(stories)} "
            f"reservations over {drill.load_seconds:.0f} s; faults on the way"
        )
        await app.set_faults(LOAD_FAULTS)
        gateway_failing = asyncio.Event()
        await asyncio.gather(
            run_load(app, stories, seconds=drill.load_seconds, last_fault=gateway_failing),
            _faults(system, app, drill, gateway_failing),
        )
        await app.set_faults({})
        journal.note("load done, faults off")
        reports = [await _reconcile(system, journal)]
        settle_seconds = drill.payment_timeout_seconds + SETTLE_MARGIN_SECONDS
        await settle(app, seconds=settle_seconds)
        reports.append(await _reconcile(system, journal))
        await settle(app, seconds=SETTLE_MARGIN_SECONDS)
        books = await read_books(app)
        violations = [*journal.violations, *check(app, books)]
        if (dead := system.supervisor.dead()) is not None:
            violations.append(f"{dead} is not running")
        journal.note(f"checked: {len(violations)} violation(s)")
        report = ChaosReport(drill=drill, timeline=journal.lines, violations=violations)
        report.orders_by_status = Counter(order.status for order in books.orders.values())
        report.counts = _counts(books, journal, reports, await app.faults_fired())
    return report


async def _faults(system: System, app: App, drill: Drill, gateway_failing: asyncio.Event) -> None:
    """The faults of the issue, in its order, at even steps over the load."""
    journal, rng = app.journal, random.Random(drill.seed)
    steps: list[Callable[[], Awaitable[None]]] = [
        lambda: _crash(journal, f"worker-{rng.randrange(2)}", system.kill, system.start),
        lambda: _crash(journal, f"api-{rng.randrange(2)}", system.kill, system.start),
        lambda: _crash(
            journal, "temporal", lambda _: system.kill_temporal(), lambda _: system.start_temporal()
        ),
        lambda: _cut_database(system, journal, drill.database_cut_seconds),
        lambda: _fail_gateway(app, drill, gateway_failing),
    ]
    began = time.monotonic()
    for number, step in enumerate(steps, 1):
        await asyncio.sleep(
            began + number * drill.load_seconds / (len(steps) + 1) - time.monotonic()
        )
        await step()


async def _crash(
    journal: Journal, name: str, kill: Callable[[str], None], start: Callable[[str], None]
) -> None:
    journal.note(f"SIGKILL {name}")
    await asyncio.to_thread(kill, name)
    journal.count("processes killed")
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(start, name)
    journal.count("processes restarted")
    journal.note(f"{name} restarted")


async def _cut_database(system: System, journal: Journal, seconds: float) -> None:
    proxy = system.database_proxy
    if proxy is None:
        journal.note("database cut skipped: SQLite is a file, with no connection to cut")
        return
    journal.note(f"database cut off for {seconds:.0f} s")
    cut = time.monotonic()
    proxy.cut()
    await asyncio.sleep(seconds)
    proxy.start()
    journal.count("database cut (seconds)", round(time.monotonic() - cut))
    journal.note("database reachable again")


async def _fail_gateway(app: App, drill: Drill, failing: asyncio.Event) -> None:
    """Each failure mode in turn, then on until calls have failed and notifications were lost:
    on a slow machine the load may meet the planned seconds with few calls."""
    before = await app.faults_fired()
    for number, mode in enumerate(GATEWAY_FAIL_MODES):
        app.journal.note(
            f"sandbox: {GATEWAY_FAIL_RATE:.0%} of gateway calls fail ({mode}), "
            f"{NOTIFICATION_DROP_RATE:.0%} of notifications dropped"
        )
        await app.set_faults(
            {
                **LOAD_FAULTS,
                "fail_rate": GATEWAY_FAIL_RATE,
                "fail_mode": mode,
                "drop_rate": NOTIFICATION_DROP_RATE,
                "seed": drill.seed * len(GATEWAY_FAIL_MODES) + number,
            }
        )
        failing.set()
        await asyncio.sleep(drill.gateway_fault_seconds / len(GATEWAY_FAIL_MODES))
    deadline = time.monotonic() + GATEWAY_FAULTS_LONGEST_SECONDS
    while not _both_fired(before, await app.faults_fired()) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    await app.set_faults(LOAD_FAULTS)
    app.journal.note("sandbox: gateway calls and notifications go through again")


def _both_fired(before: FaultsFired, now: FaultsFired) -> bool:
    return now.failed > before.failed and now.notifications_dropped > before.notifications_dropped


async def _reconcile(system: System, journal: Journal) -> ReconciliationReport:
    """One reconciliation run now, over everything however recent, as an operator would start
    it; its report, once it has driven what it found to its end."""
    client = await system.temporal_client()
    report = await client.execute_workflow(
        ReconcileWorkflow.run,
        Reconciliation(older_than_seconds=0),
        id=f"chaos-reconcile-{uuid.uuid4().hex}",
        task_queue=TASK_QUEUE,
    )
    kinds = Counter(finding.kind for finding in report.findings)
    journal.note(
        "reconciliation run: "
        + (", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "nothing found")
    )
    return report


def _counts(
    books: Books,
    journal: Journal,
    reconciliations: list[ReconciliationReport],
    fired: FaultsFired,
) -> Counter[str]:
    counts: Counter[str] = Counter()
    counts["orders"] = len(books.orders)
    counts["reservations"] = len(books.reservations)
    payments = [p for order in books.orders.values() for p in order.payments]
    refunds = [r for order in books.orders.values() for r in order.refunds]
    counts["payments captured (our books)"] = len(payments)
    counts["payments captured (sandbox)"] = len(books.ledger)
    counts["refunds (our books)"] = sum(refund.status == "succeeded" for refund in refunds)
    counts["refunds (sandbox)"] = sum(len(trade.refunds) for trade in books.trades.values())
    for fault in ("processes killed", "processes restarted", "database cut (seconds)"):
        counts[fault] = journal.counts[fault]
    counts["gateway calls"] = fired.calls
    counts["gateway calls failed"] = fired.failed
    counts["notifications dropped"] = fired.notifications_dropped
    counts["notifications duplicated"] = fired.notifications_duplicated
    counts["reconciliation findings (last two runs)"] = sum(
        len(report.findings) for report in reconciliations
    )
    # Then what the load saw, grouped by its words.
    counts.update(
        dict(sorted((what, n) for what, n in journal.counts.items() if what not in counts))
    )
    return counts


def print_report(report: ChaosReport) -> None:
    print()
    for line in report.timeline:
        print(line)
    print()
    drill = report.drill
    print(f"chaos drill on {drill.database}, seed {drill.seed}, in {report.seconds:.0f} s")
    statuses = sorted(report.orders_by_status.items())
    rows = [(what, str(n)) for what, n in report.counts.items()]
    rows[1:1] = [(f"  {status}", str(n)) for status, n in statuses]
    print_table(("what", "count"), rows)
    if not report.violations:
        print("no violation: nothing lost")
        return
    print(f"{len(report.violations)} violation(s):")
    for violation in report.violations:
        print(f"  - {violation}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=Drill.orders)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default=Drill.database)
    parser.add_argument("--seed", type=int, default=Drill.seed)
    parser.add_argument("--load-seconds", type=float, default=Drill.load_seconds)
    parser.add_argument("--payment-timeout", type=int, default=Drill.payment_timeout_seconds)
    args = parser.parse_args()
    interrupt_on_sigterm()
    report = run_chaos(
        Drill(
            orders=args.orders,
            database=args.database,
            seed=args.seed,
            load_seconds=args.load_seconds,
            payment_timeout_seconds=args.payment_timeout,
        )
    )
    print_report(report)
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
