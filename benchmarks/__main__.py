"""`make bench`: paysaga's speed and memory as ratios to baselines measured in the same run.

Starts the whole system as separate processes (`stack.system`: the Temporal dev server, the
sandbox, workers, APIs) and beside it the baselines — bare workers of the engine
(`benchmarks.engine`) and bare callback endpoints (`benchmarks.bare_callbacks`), as many as
there are workers and APIs — on the same Temporal server and the same database. Then:

1. a warm-up of paid orders and of bare workflows, then a few of each one at a time (how long
   a create's path is with nothing to queue behind), after which each worker's and API's
   resident memory is read;
2. the engine: `--orders` bare workflows of the saga's shape, `--concurrency` in flight;
3. end to end: as many orders, created, paid and read `paid`, as many in flight; memory is read
   again (the engine goes first: later runs on one server are slower, so this favours it);
4. callbacks: genuine notifications of paid trades of both gateways, each twice, delivered to
   the bare endpoints and then to paysaga's doors. The workers of both are paused meanwhile:
   what is measured is the door (verify, record, hand to the saga, which Temporal then holds),
   not the sagas settling on the same cores, which the bare endpoint has no counterpart of.
   Once they go on, every one of those orders must come to read `paid`.

It prints a table and writes `.bench/summary.json`.

    python -m benchmarks [--orders 10000] [--concurrency 20] [--database postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import temporalio
from temporalio.client import Client

from benchmarks.engine import bare_orders
from benchmarks.measure import (
    Timed,
    cpu_seconds,
    cpu_seconds_of_command,
    percentile,
    resident_mib,
)
from benchmarks.order_flow import (
    IDLE_CONNECTION_SECONDS,
    all_paid,
    delivered,
    notifications_with_duplicates,
    paid_orders,
    trades_paid_unnotified,
)
from core.settings import Settings
from paysaga.dev import interrupt_on_sigterm, wait_for_port
from paysaga.worker import DATABASE_THREADS
from stack.databases import own_database_url
from stack.ports import free_port
from stack.system import API_KEY, System, running_system

SUMMARY = Path(".bench/summary.json")
BARE_TASK_QUEUE = "bench-bare-orders"
# Orders, and bare workflows, taken one at a time: what a create costs in time with nothing to
# wait behind, which the loaded phases' latencies add their queueing to.
ALONE = 50
# The system runs with production's defaults but for the APIs' rate limit, lifted by
# `stack.system` (one client makes all the load); the tests' shorter budgets are undone here.
SYSTEM_ENV = {
    f"PAYSAGA_{name.upper()}": str(Settings.model_fields[name].default)
    for name in (
        "payment_create_timeout_seconds",
        "webhook_relay_every_seconds",
        "webhook_retry_initial_seconds",
    )
}


@dataclass(frozen=True)
class Baselines:
    workers: list[str]
    bare_callback_urls: list[str]


def start_baselines(system: System) -> Baselines:
    """A bare worker beside each of ours, a bare callback endpoint beside each API."""
    python = sys.executable
    workers = [f"bare-worker-{n}" for n, _ in enumerate(system.workers)]
    for name in workers:
        system.supervisor.start(
            name, [python, "-m", "benchmarks.engine", system.temporal_address, BARE_TASK_QUEUE]
        )
    urls = []
    for n, _ in enumerate(system.api_urls):
        port = free_port()
        system.supervisor.start(
            f"bare-callbacks-{n}", [python, "-m", "benchmarks.bare_callbacks", str(port)]
        )
        wait_for_port("127.0.0.1", port, supervisor=system.supervisor, name="a bare endpoint")
        urls.append(f"http://127.0.0.1:{port}")
    return Baselines(workers, urls)


# Below this share of the cores busy, a phase was not CPU-bound. Saturated phases kept 1.6 to
# 1.9 of 2 cores busy here; the rest is the operating system's.
IDLE_SHARE = 0.6


def cpu(system: System) -> dict[str, float]:
    """CPU seconds used so far by each process of the run: the system's, the baselines', the
    database server's, and this load generator's."""
    used = {name: cpu_seconds(process.pid) for name, process in system.supervisor.children.items()}
    used["postgres"] = cpu_seconds_of_command("postgres")
    used["load generator"] = time.process_time()
    return used


def cpu_ms_per_item(
    before: dict[str, float], after: dict[str, float], count: int
) -> dict[str, float]:
    spent = {name: 1000 * (after[name] - before[name]) / count for name in before}
    return {name: ms for name, ms in sorted(spent.items(), key=lambda item: -item[1]) if ms > 0.05}


def cores_busy(before: dict[str, float], after: dict[str, float], wall: float) -> float:
    """How many cores the run's processes kept busy, on average, over `wall` seconds."""
    return sum(after[name] - before[name] for name in before) / wall


def memory(system: System) -> dict[str, float]:
    ours = [*system.workers, *(f"api-{n}" for n in range(len(system.api_urls)))]
    return {name: resident_mib(system.supervisor.children[name].pid) for name in ours}


async def measure(system: System, args: argparse.Namespace) -> dict[str, Any]:
    baselines = start_baselines(system)
    engine = await Client.connect(system.temporal_address)

    def app() -> httpx.AsyncClient:
        """The business's app, with connections of its own for each phase: none is left idle
        from one phase to the next."""
        return httpx.AsyncClient(
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=60,
            limits=httpx.Limits(
                max_connections=4 * args.concurrency, keepalive_expiry=IDLE_CONNECTION_SECONDS
            ),
        )

    print(f"warm-up: {args.warmup} orders and as many bare workflows", flush=True)
    async with app() as http:
        await paid_orders(http, system, args.warmup, args.concurrency, label="warm-up")
    await bare_orders(engine, BARE_TASK_QUEUE, args.warmup, args.concurrency)
    print(f"one at a time: {ALONE} orders and as many bare workflows", flush=True)
    async with app() as http:
        alone = await paid_orders(http, system, ALONE, 1, label="alone")
    _, alone_to_first_activity = await bare_orders(engine, BARE_TASK_QUEUE, ALONE, 1)
    before = memory(system)

    print(f"engine: {args.orders} bare workflows", flush=True)
    used = [cpu(system)]
    bare, to_first_activity = await bare_orders(
        engine, BARE_TASK_QUEUE, args.orders, args.concurrency
    )
    used.append(cpu(system))
    print(f"end to end: {args.orders} orders", flush=True)
    async with app() as http:
        e2e = await paid_orders(http, system, args.orders, args.concurrency, label="order")
    used.append(cpu(system))
    after = memory(system)

    print(f"callbacks: {args.callbacks} paid trades, each notified twice", flush=True)
    async with app() as http:
        trades = await trades_paid_unnotified(
            http, system, args.callbacks, args.concurrency, label="callback"
        )
    with system.paused([*system.workers, *baselines.workers]):
        notifications = notifications_with_duplicates(system, trades, seed=args.seed)
        used.append(cpu(system))
        bare_doors = await delivered(baselines.bare_callback_urls, notifications, args.concurrency)
        used.append(cpu(system))
        notifications = notifications_with_duplicates(system, trades, seed=args.seed)
        used.append(cpu(system))
        print("  to paysaga's doors", flush=True)
        doors = await delivered(system.api_urls, notifications, args.concurrency)
        used.append(cpu(system))
    async with app() as http:
        await all_paid(http, system, [trade["out_trade_no"] for trade in trades])

    growth = {name: 100 * (after[name] - before[name]) / before[name] for name in before}
    create_p99 = e2e.percentile_ms(99)
    to_first_activity_p99 = percentile(to_first_activity, 99)
    create_alone_p50 = alone.percentile_ms(50)
    to_first_activity_alone_p50 = percentile(alone_to_first_activity, 50)
    return {
        "e2e_orders_per_s": e2e.per_second,
        "engine_orders_per_s": bare.per_second,
        "e2e_vs_engine": e2e.per_second / bare.per_second,
        "callbacks_per_s": doors.per_second,
        "bare_callbacks_per_s": bare_doors.per_second,
        "callbacks_vs_bare": doors.per_second / bare_doors.per_second,
        "create_p99_ms": create_p99,
        "engine_start_to_first_activity_p99_ms": to_first_activity_p99,
        "create_p99_vs_engine": create_p99 / to_first_activity_p99,
        # The same, one at a time: how much longer a create's path is, queueing aside.
        "create_alone_p50_ms": create_alone_p50,
        "engine_start_to_first_activity_alone_p50_ms": to_first_activity_alone_p50,
        "create_alone_vs_engine": create_alone_p50 / to_first_activity_alone_p50,
        "rss_growth_pct": max(growth.values()),
        "rss_growth_pct_by_process": growth,
        "rss_mib_before": before,
        "rss_mib_after": after,
        # Where the time goes: CPU per order (or per callback) of every process, by phase.
        "cpu_ms_each": {
            "engine": cpu_ms_per_item(used[0], used[1], args.orders),
            "e2e": cpu_ms_per_item(used[1], used[2], args.orders),
            "bare_callback": cpu_ms_per_item(used[3], used[4], len(notifications)),
            "callback": cpu_ms_per_item(used[5], used[6], len(notifications)),
        },
        # A ratio compares like with like only if both of its phases kept the machine busy: a
        # phase that waited (on a stalled disk, on a paused virtual machine) shows a throughput
        # its CPU per item does not explain.
        "cores_busy": {
            "engine": cores_busy(used[0], used[1], bare.wall),
            "e2e": cores_busy(used[1], used[2], e2e.wall),
            "bare_callback": cores_busy(used[3], used[4], bare_doors.wall),
            "callback": cores_busy(used[5], used[6], doors.wall),
        },
        "latency_ms": {
            "create": _spread(e2e),
            "engine_create": _spread(bare),
            "callback": _spread(doors),
            "bare_callback": _spread(bare_doors),
        },
        "counts": {
            "warmup_orders": args.warmup,
            "alone_orders": ALONE,
            "orders": args.orders,
            "engine_orders": args.orders,
            "callback_trades": args.callbacks,
            "callbacks": len(notifications),
        },
        "concurrency": args.concurrency,
        "settings": settings_of(system, args),
    }


def _spread(timed: Timed) -> dict[str, float]:
    return {f"p{p}": timed.percentile_ms(p) for p in (50, 95, 99)}


def settings_of(system: System, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "database": args.database,
        "workers": len(system.workers),
        "apis": len(system.api_urls),
        "worker_database_threads": DATABASE_THREADS,
        "temporal_server": system.temporal_command[1:],
        "system_env": SYSTEM_ENV,
        "temporalio": temporalio.__version__,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }


def print_table(summary: dict[str, Any]) -> None:
    rows = [
        ("orders end to end /s", "e2e_orders_per_s", "engine_orders_per_s", "e2e_vs_engine"),
        ("callbacks /s", "callbacks_per_s", "bare_callbacks_per_s", "callbacks_vs_bare"),
        (
            "create p99 ms",
            "create_p99_ms",
            "engine_start_to_first_activity_p99_ms",
            "create_p99_vs_engine",
        ),
        (
            "create alone p50 ms",
            "create_alone_p50_ms",
            "engine_start_to_first_activity_alone_p50_ms",
            "create_alone_vs_engine",
        ),
    ]
    print(f"\n{'':<22}{'paysaga':>12}{'baseline':>12}{'ratio':>8}   target")
    targets = {
        "e2e_vs_engine": ">= 0.6",
        "callbacks_vs_bare": ">= 0.5",
        "create_p99_vs_engine": "<= 2",
    }
    for label, ours, baseline, ratio in rows:
        print(
            f"{label:<22}{summary[ours]:>12.1f}{summary[baseline]:>12.1f}{summary[ratio]:>8.2f}"
            f"   {targets.get(ratio, '-')}"
        )
    for phase, spent in summary["cpu_ms_each"].items():
        print(f"cpu ms each, {phase}: " + ", ".join(f"{n} {ms:.1f}" for n, ms in spent.items()))
    cores = summary["settings"]["cores"]
    busy = summary["cores_busy"]
    print(f"cores busy of {cores}: " + ", ".join(f"{p} {n:.2f}" for p, n in busy.items()))
    for phase, n in busy.items():
        if n < IDLE_SHARE * cores:
            print(
                f"WARNING: the {phase} phase kept {n:.2f} of {cores} cores busy: it waited on "
                "something other than CPU, and the ratios it is part of do not compare like "
                "with like"
            )
    for name, growth in summary["rss_growth_pct_by_process"].items():
        before, after = summary["rss_mib_before"][name], summary["rss_mib_after"][name]
        print(f"rss {name:<18}{before:>10.1f} MiB -> {after:.1f} MiB ({growth:+.1f} %, < 10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--callbacks", type=int, default=1_000, help="paid trades notified")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--summary", type=Path, default=SUMMARY)
    args = parser.parse_args()
    interrupt_on_sigterm()
    with (
        tempfile.TemporaryDirectory() as home,
        own_database_url(args.database, Path(home), purpose="bench") as url,
        running_system(
            Path(home),
            url,
            workers=args.workers,
            apis=args.apis,
            env=SYSTEM_ENV,
            cuttable_database=False,
        ) as system,
    ):
        summary = asyncio.run(measure(system, args))
    print_table(summary)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten to {args.summary}")


if __name__ == "__main__":
    main()
