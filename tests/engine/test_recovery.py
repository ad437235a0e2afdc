"""Crash recovery: a worker killed mid-run is replaced and the run finishes, without
running again any node that had already completed."""

from __future__ import annotations

import asyncio
import signal

from tests.support.engine import Platform, crash_worker_during, worker_process
from tests.support.fake_http import HttpToolService
from tests.support.graphs import chain, kinds
from workflows.events import EventType
from workflows.status import ExecutionStatus


async def test_sigkill_worker_mid_run_then_new_worker_finishes(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    async with HttpToolService() as service:
        before = await platform.tool("before", service.url("before"))
        after = await platform.tool("after", service.url("after"))
        slow = await platform.agent("slow", metadata={"fake": {"delay_s": 3}})
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "before", "type": "tool", "tool_id": before},
                    {"id": "think", "type": "agent", "agent_id": slow, "input": "x"},
                    {"id": "after", "type": "tool", "tool_id": after},
                ],
                "edges": chain("before", "think", "after"),
            }
        )
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
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "think", "type": "agent", "agent_id": slow, "input": "x"},
                {"id": "next", "type": "agent", "agent_id": slow, "input": "y"},
            ],
            "edges": chain("think", "next"),
        }
    )
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
