"""Timing a load at a fixed concurrency, and reading a process's memory and CPU time."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timed:
    """What a step measured each time it ran (seconds, unless it says), and the wall time."""

    latencies: list[float]
    wall: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.wall

    def percentile_ms(self, percent: float) -> float:
        return 1000 * percentile(self.latencies, percent)


def percentile(values: list[float], percent: float) -> float:
    """Nearest rank: the smallest value with at least `percent` % of them at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


async def pipelined(count: int, concurrency: int, step: Callable[[int], Awaitable[float]]) -> Timed:
    """Run `step(0)` … `step(count - 1)` with `concurrency` always in flight: each of that many
    lanes takes the next number as soon as its last step ends (no phases, no waiting for the
    slowest of a batch). A step returns what it measured."""
    numbers = iter(range(count))
    measured: list[float] = []

    async def lane() -> None:
        for n in numbers:
            measured.append(await step(n))

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return Timed(measured, time.perf_counter() - started)


def resident_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime, the 14th and 15th fields of the line (after pid and comm).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of_command(name: str) -> float:
    """CPU time used so far by every process named `name` (a server not started here, such as
    the PostgreSQL the system writes to, which serves it from many processes)."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                total += cpu_seconds(int(comm.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return total
