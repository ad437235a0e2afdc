"""Crash recovery: a worker killed mid-run is replaced and the run finishes, without
running again any node that had already completed."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import JSONResponse

from infra.db import create_engine
from infra.models import ExecutionEvent
from tests.support.engine import Platform, crash_worker_during, worker_process
from tests.support.fake_http import HttpToolService
from tests.support.graphs import chain, kinds
from tests.support.waiting import wait_for
from workflows.contracts import ActivityName, HumanResponse
from workflows.events import EventType
from workflows.execution import ExecutionWorkflow
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


async def test_a_lost_worker_does_not_use_up_the_nodes_attempts(
    platform_without_worker: Platform,
) -> None:
    """One attempt allowed, and the worker dies during it: the call is scheduled again
    (the lost attempt counted in the node's attempts) instead of failing the run."""
    platform = platform_without_worker
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": 3}})
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "think",
                    "type": "agent",
                    "agent_id": slow,
                    "input": "x",
                    "retry": {"max_attempts": 1},
                }
            ],
            "edges": chain("think"),
        }
    )
    execution = await platform.run(workflow_id)

    _, final = await crash_worker_during(platform, execution["id"], "think")

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"think": 2}
    history = platform.client.get_workflow_handle(final["temporal"]["workflow_id"])
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_id
        async for e in history.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # The other activity is the record of the run's state (workflows.execution._sync).
    assert [a for a in scheduled if a.startswith("think/")] == [
        "think/1/llm/0",
        "think/1/llm/0/lost-1",
    ]


@dataclass
class HangingToolService(HttpToolService):
    """A tool that holds its answer until the test lets it go."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: Request) -> JSONResponse:
        self.calls[request.path_params["name"]] += 1
        await self.release.wait()
        return JSONResponse({"charged": True})


async def test_an_at_most_once_tool_that_lost_its_worker_is_not_called_again(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    service = HangingToolService()
    async with service:
        charge = await platform.tool("charge", service.url("charge"), delivery="at_most_once")
        workflow_id = await platform.workflow(
            {"nodes": [{"id": "pay", "type": "tool", "tool_id": charge}], "edges": chain("pay")}
        )
        execution = await platform.run(workflow_id)
        async with worker_process(platform, KEEL_TOOLS_ALLOW_PRIVATE="true") as first:

            async def charging() -> bool | None:
                return service.calls["charge"] == 1 or None

            await wait_for(charging, timeout=60, what="the charge to reach the tool")
            first.send_signal(signal.SIGKILL)
            await first.wait()
        service.release.set()
        async with worker_process(platform, KEEL_TOOLS_ALLOW_PRIVATE="true"):
            final = await platform.wait_status(
                execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, timeout=90
            )
    assert final["status"] == ExecutionStatus.FAILED
    assert "Heartbeat" in final["error"] or "heartbeat" in final["error"]
    assert service.calls["charge"] == 1


async def test_an_answer_while_no_worker_runs_is_a_503_to_send_again(
    platform_without_worker: Platform,
) -> None:
    """A human node waits and its worker is gone: the answer cannot be taken now. That
    is a 503 with Retry-After (send it again), not a 409 (which says: never)."""
    platform = platform_without_worker
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "gate", "type": "human", "prompt": "go?"}], "edges": chain("gate")}
    )
    execution = await platform.run(workflow_id)
    answer = f"/api/v1/Execution/{execution['id']}/signal"
    async with worker_process(platform) as first:
        await platform.watch_until(execution["id"], EventType.HUMAN_WAITING, "gate")
        first.send_signal(signal.SIGKILL)
        await first.wait()

    refused = await platform.http.post(answer, json={"node_id": "gate", "action": "approve"})
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "send it again" in refused.json()["msg"]

    async with worker_process(platform):

        async def answered() -> bool | None:
            # The first answer may still reach the run once a worker takes it: then
            # sending it again is refused (409), which is how a client knows.
            response = await platform.http.post(
                answer, json={"node_id": "gate", "action": "approve"}
            )
            return response.status_code in (200, 409) or None

        await wait_for(answered, timeout=90, interval=1, what="the answer to be taken")
        final = await platform.wait_status(execution["id"], ExecutionStatus.COMPLETED, timeout=60)
    events, _ = await platform.watch(final["id"])
    assert kinds(events).count((EventType.HUMAN_RESPONDED, "gate")) == 1


async def test_a_record_found_behind_is_rebuilt_from_the_stream(platform: Platform) -> None:
    """The record lost events the workflow had recorded (a database restored from an
    older backup, say): the next milestone's write refuses the events handed over, which
    do not follow the record, and the workflow records from the whole stream instead."""
    agent = await platform.agent("drafter")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "draft", "type": "agent", "agent_id": agent, "input": "draft"},
                {"id": "approve", "type": "human", "prompt": "ship it?"},
                {"id": "ship", "type": "agent", "agent_id": agent, "input": "ship"},
            ],
            "edges": chain("draft", "approve", "ship"),
        }
    )
    execution = await platform.run(workflow_id)
    await platform.wait_status(execution["id"], ExecutionStatus.WAITING)
    engine = create_engine(platform.settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            lost = await conn.execute(
                delete(ExecutionEvent).where(ExecutionEvent.execution_id == execution["id"])
            )
        assert lost.rowcount == 6  # up to human.waiting

        # Straight to Temporal, and no API call on the run until it ends: the API brings
        # an open run's record up to date itself (after an answer, on a GET), and this
        # is about the workflow's own write.
        run = platform.client.get_workflow_handle(execution["temporal"]["workflow_id"])
        # (The SDK types an async update's result as its coroutine, hence the ignore.)
        await run.execute_update(  # type: ignore[unused-coroutine]
            ExecutionWorkflow.respond, HumanResponse(node_id="approve", action="approve")
        )
        await run.result()
        async with engine.connect() as conn:
            stored = list(
                await conn.scalars(
                    select(ExecutionEvent.seq)
                    .where(ExecutionEvent.execution_id == execution["id"])
                    .order_by(ExecutionEvent.seq)
                )
            )
    finally:
        await engine.dispose()

    streamed, _ = await platform.watch(execution["id"])
    assert stored == [e["seq"] for e in streamed] == list(range(1, 13))
    final = await platform.get(execution["id"])
    assert final["status"] == ExecutionStatus.COMPLETED
    assert {n["node_id"]: n["status"] for n in final["nodes"]} == dict.fromkeys(
        ("draft", "approve", "ship"), "completed"
    )
    # The rebuild was the activity that reads the stream, after the local one refused.
    history = await run.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled.count(ActivityName.SYNC_EXECUTION.value) == 1
