"""`keel worker` drains on SIGTERM: it takes no new tasks, lets activities in flight
finish within KEEL_WORKER_SHUTDOWN_GRACE_S, and past that cancels them so Temporal
retries them on another worker."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.engine import Platform, worker_process
from tests.support.graphs import chain
from workflows.events import EventType
from workflows.status import ExecutionStatus


def events(log: Path) -> list[str]:
    return [
        json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")
    ]


async def one_slow_node(platform: Platform, delay_s: float) -> dict[str, Any]:
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": delay_s}})
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": slow}], "edges": chain("a")}
    )
    return await platform.run(workflow_id)


async def sigterm_when_started(
    platform: Platform, execution_id: int, worker: asyncio.subprocess.Process
) -> float:
    """SIGTERM the worker once node a runs on it; seconds until it exited."""
    await platform.watch_until(execution_id, EventType.NODE_STARTED, "a")
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert await asyncio.wait_for(worker.wait(), 60) == 0
    return time.monotonic() - started


async def test_sigterm_lets_the_activity_in_flight_finish(
    platform_without_worker: Platform, tmp_path: Path
) -> None:
    platform = platform_without_worker
    execution = await one_slow_node(platform, delay_s=3)
    log = tmp_path / "worker.err"
    async with worker_process(platform, log, KEEL_WORKER_SHUTDOWN_GRACE_S="30") as worker:
        took = await sigterm_when_started(platform, execution["id"], worker)
    assert took < 30
    assert "worker draining: no new tasks; in-flight activities may finish" in events(log)
    # The model call finished on the draining worker: a new worker only closes the run.
    async with worker_process(platform, tmp_path / "second.err", KEEL_WORKER_SHUTDOWN_GRACE_S="30"):
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, timeout=60
        )
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"a": 1}


async def test_past_the_grace_the_activity_is_retried_elsewhere(
    platform_without_worker: Platform, tmp_path: Path
) -> None:
    platform = platform_without_worker
    execution = await one_slow_node(platform, delay_s=20)
    log = tmp_path / "worker.err"
    async with worker_process(platform, log, KEEL_WORKER_SHUTDOWN_GRACE_S="1") as worker:
        took = await sigterm_when_started(platform, execution["id"], worker)
    assert took < 15, took  # the grace, not the 20 s the model call wanted
    async with worker_process(platform, tmp_path / "second.err", KEEL_WORKER_SHUTDOWN_GRACE_S="30"):
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, timeout=90
        )
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"a": 2}
