"""What the workflow sandbox costs a run, in process: the worker's CPU to replay recorded
histories of ExecutionWorkflow with the runner ``keel worker`` uses (no sandbox) against
the tests' checking sandbox (worker.main.checking_runner, none of our modules passed
through).

    python -m bench.replay_cost [--replays 200] [--rounds 4] [--history PATH]

Replay runs the workflow code of every workflow task of a history (the activation, the
sandbox's glue code, payload conversion) and none of the activities, the API or
Temporal: what is left is the workflow side of a run. Rounds alternate the two runners,
so a noisy stretch of the machine hits both; the figures are CPU milliseconds per
replayed run (``time.process_time``), median and range over the rounds. Run with the
bytecode cache on (``PYTHONDONTWRITEBYTECODE`` unset): the sandbox re-imports our
workflow modules for every run, and compiles them each time without the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, WorkflowRunner

from infra.temporal import data_converter
from worker.main import checking_runner, workflow_runner
from workflows.execution import ExecutionWorkflow

DEFAULT_HISTORY = Path(__file__).resolve().parents[1] / "tests/histories/test_linear_graph-1.json"


async def cpu_ms_per_replay(runner: WorkflowRunner, history: dict[str, Any], replays: int) -> float:
    replayer = Replayer(
        workflows=[ExecutionWorkflow],
        workflow_runner=runner,
        data_converter=data_converter,
    )

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for i in range(replays):
            yield WorkflowHistory.from_json(f"replay-{i}", history)

    started = time.process_time()
    await replayer.replay_workflows(histories(), raise_on_replay_failure=True)
    return (time.process_time() - started) / replays * 1000


async def measure(history: dict[str, Any], replays: int, rounds: int) -> dict[str, list[float]]:
    runners: dict[str, WorkflowRunner] = {
        "unsandboxed (as keel worker runs)": workflow_runner(),
        "the checking sandbox (as the tests run)": checking_runner(),
    }
    for runner in runners.values():  # warm: imports, the sandbox's module cache
        await cpu_ms_per_replay(runner, history, 5)
    figures: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            figures[name].append(await cpu_ms_per_replay(runner, history, replays))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY)
    args = parser.parse_args()
    history = json.loads(args.history.read_text())
    figures = asyncio.run(measure(history, args.replays, args.rounds))
    lines = [
        f"{args.history.name}: {args.rounds} rounds of {args.replays} replays; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "| runner | CPU ms per replayed run, median (min-max) |",
        "| --- | --- |",
    ]
    for name, values in figures.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) |"
        )
    os.write(1, ("\n".join(lines) + "\n").encode())  # a report on stdout, not a log line


if __name__ == "__main__":
    main()
