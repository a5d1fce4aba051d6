"""The chaos drill (`make chaos`), short: 150 orders while a worker, an API and the Temporal dev
server are SIGKILLed and restarted, the database is cut off (PostgreSQL only) and the sandbox
fails gateway calls and drops notifications; then nothing may be lost."""

from __future__ import annotations

import pytest

from benchmarks.chaos import Drill, print_report, run_chaos
from tests.databases import POSTGRES_URL
from tests.system import DATABASE_KIND

pytestmark = pytest.mark.slow


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
