"""The chaos run, short (issue 13, point 7): 20 runs of every shape on ``keel up`` while
its worker is SIGKILLed every few seconds and Temporal, the database (MariaDB, when
KEEL_TEST_MYSQL_URL says this machine has it) and the API are each restarted once.
Nothing is lost, stuck, duplicated or disagreeing. ``make chaos`` is the long version.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.chaos import Chaos, Plan

RUNS = 20


async def test_a_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    plan = Plan(
        runs=RUNS,
        kill_every_s=10.0,
        start_over_s=20.0,
        database="mariadb" if os.environ.get("KEEL_TEST_MYSQL_URL") else "sqlite",
        deadline_s=480.0,
    )
    report = await Chaos(plan, tmp_path / "chaos").run()

    table = report.markdown("pytest tests/scale/test_chaos.py")
    happened = [d.what for d in report.disruptions]
    assert "worker SIGKILL" in happened, table
    assert any(w.startswith("temporal") for w in happened), table
    assert any(w.startswith("api") for w in happened), table
    if plan.database == "mariadb":
        assert any(w.startswith("MariaDB") for w in happened), table
    assert report.passed, table
    assert report.ledger_llm_rows + report.unrecorded_killed == report.llm_answered, table
