"""The chaos drill (`make chaos`), short: 150 orders while a worker, an API and the Temporal dev
server are SIGKILLed and restarted, the database is cut off (PostgreSQL only) and the sandbox
fails gateway calls and drops notifications; then nothing may be lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.chaos import Drill, print_report, run_chaos
from tests.databases import POSTGRES_URL
from tests.processes import alive, descendants
from tests.system import DATABASE_KIND

pytestmark = pytest.mark.slow
STARTING_SECONDS = 60
# The system's processes are each given 15 s to stop before they are killed.
STOPPING_SECONDS = 60


def test_no_order_and_no_money_is_lost_under_crashes_and_gateway_faults() -> None:
    drill = Drill(
        orders=150,
        database=DATABASE_KIND,
        seed=9,
        load_seconds=30,
        payment_timeout_seconds=15,
        database_cut_seconds=5,
        gateway_fault_seconds=9,
    )
    report = run_chaos(drill, postgres_url=POSTGRES_URL)
    print_report(report)  # pytest shows it when the test fails
    assert report.violations == []
    assert report.counts["orders"] >= drill.orders
    assert report.counts["processes killed"] == report.counts["processes restarted"] == 3
    assert report.counts["gateway calls failed"] > 0
    assert report.counts["notifications dropped"] > 0
    assert report.counts["notifications duplicated"] > 0
    assert report.counts["refunds (sandbox)"] > 0
    if DATABASE_KIND == "postgresql":
        assert report.counts["database cut (seconds)"] >= drill.database_cut_seconds


def test_a_drill_stopped_by_sigterm_stops_every_process_it_started() -> None:
    # `kill`, CI and a terminal's close send SIGTERM: a drill that died alone would leave its
    # Temporal server, workers and APIs running, holding ports and the database.
    drill = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.chaos", "--orders", "50", "--database", "sqlite"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = descendants(drill.pid)
    try:
        deadline = time.monotonic() + STARTING_SECONDS
        while not any(command[-1:] == ["api"] for command in children.values()):
            assert time.monotonic() < deadline, f"the drill's system did not start: {children}"
            time.sleep(0.2)
            children = descendants(drill.pid)
        assert any("start-dev" in command for command in children.values()), children
        drill.send_signal(signal.SIGTERM)
        drill.wait(STOPPING_SECONDS)
        assert [command for pid, command in children.items() if alive(pid)] == []
    finally:
        for pid in [drill.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
