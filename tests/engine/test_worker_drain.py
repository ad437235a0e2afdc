"""`keel worker` drains on SIGTERM: it takes no new tasks, lets activities in flight
finish within KEEL_WORKER_SHUTDOWN_GRACE_S, and past that cancels them so Temporal
retries them on another worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.engine.conftest import Platform
from tests.engine.test_runs import chain


@asynccontextmanager
async def worker_process(platform: Platform, log: Path, grace_s: float
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
    settings = platform.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        "KEEL_ENVIRONMENT": "test",
        "KEEL_DATABASE_URL": settings.resolved_database_url,
        "KEEL_TEMPORAL_ADDRESS": settings.temporal_address,
        "KEEL_TASK_QUEUE": settings.task_queue,
        "KEEL_SECRET_KEY": settings.secret_key,
        "KEEL_WORKER_SHUTDOWN_GRACE_S": str(grace_s),
    }
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keel", "worker", env=env, cwd=log.parent,
            stdout=asyncio.subprocess.DEVNULL, stderr=err)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def events(log: Path) -> list[str]:
    return [json.loads(line)["event"] for line in log.read_text().splitlines()
            if line.startswith("{")]


async def one_slow_node(platform: Platform, delay_s: float) -> dict[str, Any]:
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": delay_s}})
    workflow_id = await platform.workflow({
        "nodes": [{"id": "a", "type": "agent", "agent_id": slow}], "edges": chain("a")})
    return await platform.run(workflow_id)


async def sigterm_when_started(platform: Platform, execution_id: int,
                               worker: asyncio.subprocess.Process) -> float:
    """SIGTERM the worker once node a runs on it; seconds until it exited."""
    await platform.watch_until(execution_id, "node.started", "a")
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert await asyncio.wait_for(worker.wait(), 60) == 0
    return time.monotonic() - started


async def test_sigterm_lets_the_activity_in_flight_finish(platform_without_worker: Platform,
                                                          tmp_path: Path) -> None:
    platform = platform_without_worker
    execution = await one_slow_node(platform, delay_s=3)
    log = tmp_path / "worker.err"
    async with worker_process(platform, log, grace_s=30) as worker:
        took = await sigterm_when_started(platform, execution["id"], worker)
    assert took < 30
    assert "worker draining: no new tasks; in-flight activities may finish" in events(log)
    # The model call finished on the draining worker: a new worker only closes the run.
    async with worker_process(platform, tmp_path / "second.err", grace_s=30):
        final = await platform.wait_status(execution["id"], "completed", "failed", timeout=60)
    assert final["status"] == "completed", final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"a": 1}


async def test_past_the_grace_the_activity_is_retried_elsewhere(
        platform_without_worker: Platform, tmp_path: Path) -> None:
    platform = platform_without_worker
    execution = await one_slow_node(platform, delay_s=20)
    log = tmp_path / "worker.err"
    async with worker_process(platform, log, grace_s=1) as worker:
        took = await sigterm_when_started(platform, execution["id"], worker)
    assert took < 15, took  # the grace, not the 20 s the model call wanted
    async with worker_process(platform, tmp_path / "second.err", grace_s=30):
        final = await platform.wait_status(execution["id"], "completed", "failed", timeout=90)
    assert final["status"] == "completed", final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"a": 2}
