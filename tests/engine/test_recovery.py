"""Crash recovery: a worker killed mid-run is replaced and the run finishes, without
running again any node that had already completed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.engine.conftest import Platform
from tests.engine.test_runs import chain, kinds
from tests.fakes import HttpToolService
from workflows.events import EventType
from workflows.status import ExecutionStatus


@asynccontextmanager
async def worker_process(platform: Platform) -> AsyncIterator[asyncio.subprocess.Process]:
    settings = platform.settings
    env = {
        **os.environ,
        "KEEL_ENVIRONMENT": "test",
        "KEEL_DATABASE_URL": settings.resolved_database_url,
        "KEEL_TEMPORAL_ADDRESS": settings.temporal_address,
        "KEEL_TASK_QUEUE": settings.task_queue,
        "KEEL_SECRET_KEY": settings.secret_key,
        **({"KEEL_PRICING_FILE": str(settings.pricing_file)} if settings.pricing_file else {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keel", "worker", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def crash_worker_during(platform: Platform, execution_id: int, node_id: str
                              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """SIGKILL the only worker once ``node_id`` has started, start a new one, and wait for
    the run to end. Returns the events up to the crash and the final execution."""
    async with worker_process(platform) as first:
        progress = await platform.watch_until(execution_id, EventType.NODE_STARTED, node_id)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    async with worker_process(platform):
        final = await platform.wait_status(execution_id, "completed", "failed", timeout=90)
    return progress, final


async def test_sigkill_worker_mid_run_then_new_worker_finishes(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    async with HttpToolService() as service:
        before = await platform.tool("before", service.url("before"))
        after = await platform.tool("after", service.url("after"))
        slow = await platform.agent("slow", metadata={"fake": {"delay_s": 3}})
        workflow_id = await platform.workflow({
            "nodes": [{"id": "before", "type": "tool", "tool_id": before},
                      {"id": "think", "type": "agent", "agent_id": slow, "input": "x"},
                      {"id": "after", "type": "tool", "tool_id": after}],
            "edges": chain("before", "think", "after"),
        })
        execution = await platform.run(workflow_id)

        progress, final = await crash_worker_during(platform, execution["id"], "think")
        assert (EventType.NODE_COMPLETED, "before") in kinds(progress)

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert service.calls == {"before": 1, "after": 1}
    attempts = {n["node_id"]: n["attempts"] for n in final["nodes"]}
    assert attempts == {"before": 1, "think": 2, "after": 1}
    events, code = await platform.watch(execution["id"])
    assert code == 1000
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert kinds(events).count((EventType.NODE_COMPLETED, "before")) == 1


async def test_sigterm_lets_the_running_activity_finish(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": 2}})
    workflow_id = await platform.workflow({
        "nodes": [{"id": "think", "type": "agent", "agent_id": slow, "input": "x"},
                  {"id": "next", "type": "agent", "agent_id": slow, "input": "y"}],
        "edges": chain("think", "next"),
    })
    execution = await platform.run(workflow_id)

    async with worker_process(platform) as first:
        await platform.watch_until(execution["id"], EventType.NODE_STARTED, "think")
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0

    # The worker finished its in-flight activity before exiting: no retry needed.
    async with worker_process(platform):
        final = await platform.wait_status(execution["id"], "completed", "failed", timeout=60)
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"think": 1, "next": 1}
