"""Loops that run to their bound, runs that continue as new, and no run stuck in running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import workflows.execution
from activities.nodes import NodeActivities
from activities.record import RecordActivities
from infra.db import create_engine, session_factory
from tests.support import graphs
from tests.support.engine import HISTORIES, Platform, worker_process
from tests.support.fake_http import HttpToolService
from tests.support.graphs import kinds
from tests.support.responses import data
from tests.support.waiting import wait_for
from worker.main import build_worker
from workflows.contracts import ExecutionInput, ExecutionResult
from workflows.events import EventType
from workflows.execution import ExecutionWorkflow
from workflows.status import ExecutionStatus

ENDED = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED)
# A worker process reads its settings from the environment: the tools here are on loopback.
LOOPBACK_TOOLS = {"KEEL_TOOLS_ALLOW_PRIVATE": "true"}


class CountingService(HttpToolService):
    """A tool whose answer changes: ``{"n": <how many times it was called>}``."""

    async def _handle(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        self.calls[name] += 1
        return JSONResponse({"n": self.calls[name]})


def contiguous(events: list[dict[str, Any]]) -> bool:
    return [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def temporal_runs(platform: Platform, workflow_id: str) -> list[Any]:
    """Every Temporal run of one execution's chain, oldest first."""
    runs = [r async for r in platform.client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    return sorted(runs, key=lambda r: r.start_time)


async def run_number(platform: Platform, execution_id: int, at_least: int) -> dict[str, Any]:
    """Wait until the execution's chain has reached its ``at_least``-th Temporal run."""
    seen: set[str] = set()

    async def check() -> dict[str, Any] | None:
        execution = await platform.get(execution_id)
        seen.add(execution["temporal"]["run_id"])
        return execution if len(seen) >= at_least else None

    return await wait_for(check, timeout=120, interval=0.1, what=f"run {at_least} of the chain")


async def counting_loop(
    platform: Platform,
    service: HttpToolService,
    turns: int,
    then: str = "END",
    think_delay_s: float = 0,
) -> int:
    """tick (a counting tool) -> think (an agent) -> again (loops while tick < turns)."""
    tick = await platform.tool("tick", service.url("tick"))
    agent = await platform.agent("thinker", metadata={"fake": {"delay_s": think_delay_s}})
    definition = graphs.counting_loop(tick, agent, turns, then=then)
    if then != "END":
        definition["nodes"].append(
            {"id": then, "type": "human", "prompt": "after {{ nodes.tick.output.body.n }}"}
        )
        definition["edges"].append({"from": then, "to": "END"})
    return await platform.workflow(definition)


# -- loops ---------------------------------------------------------------------------------


async def test_a_loop_runs_to_its_bound_then_fails_naming_the_condition(
    platform: Platform,
) -> None:
    agent = await platform.agent("worker")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "work", "type": "agent", "agent_id": agent, "input": "{{ input.x }}"},
                {
                    "id": "again",
                    "type": "condition",
                    "max_visits": 1000,
                    "default": "END",
                    "routes": [{"when": {"path": "input.x", "op": "eq", "value": 1}, "to": "work"}],
                },
            ],
            "edges": [{"from": "START", "to": "work"}, {"from": "work", "to": "again"}],
        }
    )
    execution = await platform.run(workflow_id, {"x": 1})
    final = await platform.wait_status(execution["id"], *ENDED, timeout=600)

    assert final["status"] == ExecutionStatus.FAILED
    assert final["error"] == "condition 'again' was reached more than max_visits=1000 times"
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and contiguous(events)
    assert kinds(events).count((EventType.NODE_COMPLETED, "work")) == 1001
    assert kinds(events).count((EventType.NODE_COMPLETED, "again")) == 1000
    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["llm_calls"] == 1001


async def test_a_loop_whose_exit_is_data_driven_completes(platform: Platform) -> None:
    async with CountingService() as service:
        poll = await platform.tool("poll", service.url("poll"))
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "poll", "type": "tool", "tool_id": poll},
                    {
                        "id": "ready",
                        "type": "condition",
                        "max_visits": 10,
                        "default": "END",
                        "routes": [
                            {
                                "when": {
                                    "path": "nodes.poll.output.body.n",
                                    "op": "lt",
                                    "value": 5,
                                },
                                "to": "poll",
                            }
                        ],
                    },
                ],
                "edges": [{"from": "START", "to": "poll"}, {"from": "poll", "to": "ready"}],
            }
        )
        execution = await platform.run(workflow_id)
        final = await platform.wait_status(execution["id"], *ENDED, timeout=60)
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"]["body"] == {"n": 5}
    assert service.calls["poll"] == 5


# -- no run stuck --------------------------------------------------------------------------


async def test_an_unexpected_error_in_workflow_code_fails_the_run_at_once(
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> bool:
        raise RuntimeError("condition evaluator exploded")

    # The worker runs workflows outside the sandbox, in this process: the run sees this.
    monkeypatch.setattr(workflows.execution, "matches", broken)
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "check",
                    "type": "condition",
                    "default": "END",
                    "routes": [{"when": {"path": "input.x", "op": "eq", "value": 1}, "to": "END"}],
                }
            ],
            "edges": [{"from": "START", "to": "check"}],
        }
    )
    execution = await platform.run(workflow_id, {"x": 1})
    final = await platform.wait_status(execution["id"], ExecutionStatus.FAILED, timeout=10)
    assert final["error"] == "the engine failed: RuntimeError: condition evaluator exploded"
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and kinds(events)[-1] == (EventType.EXECUTION_FAILED, None)


# -- continue-as-new -----------------------------------------------------------------------


@pytest.mark.settings(history_events_per_run=100)
async def test_continue_as_new_is_invisible_to_watchers(platform: Platform) -> None:
    async with CountingService() as service:
        workflow_id = await counting_loop(platform, service, turns=30)
        execution = await platform.run(workflow_id)
        events, code = await platform.watch(execution["id"], timeout=180)
        final = await platform.wait_status(execution["id"], *ENDED)

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert code == 1000 and contiguous(events)
    assert service.calls["tick"] == 30  # nothing ran twice across the hand-overs
    assert kinds(events).count((EventType.NODE_COMPLETED, "think")) == 30
    assert kinds(events).count((EventType.EXECUTION_STARTED, None)) == 1
    runs = await temporal_runs(platform, execution["temporal"]["workflow_id"])
    assert len(runs) >= 3
    assert final["temporal"]["run_id"] == runs[-1].run_id != execution["temporal"]["run_id"]
    if os.environ.get("KEEL_RECORD_HISTORIES") == "1":
        # The last run of the chain is recorded anyway; keep the first, which hands over.
        first = await platform.client.get_workflow_handle(
            runs[0].id, run_id=runs[0].run_id
        ).fetch_history()
        (HISTORIES / "test_continue_as_new_hands_over-first-run.json").write_text(first.to_json())
    stored = data(await platform.http.get(f"/api/v1/Execution/{execution['id']}/events"))
    assert [e["seq"] for e in stored["items"]] == [e["seq"] for e in events]
    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["llm_calls"] == 30 and usage["tool_calls"] == 30


@pytest.mark.settings(history_events_per_run=100)
async def test_signal_reaches_a_human_node_in_the_third_run(platform: Platform) -> None:
    async with CountingService() as service:
        workflow_id = await counting_loop(platform, service, turns=25, then="gate")
        execution = await platform.run(workflow_id)
        waiting = await platform.wait_status(execution["id"], ExecutionStatus.WAITING, timeout=120)
        runs = await temporal_runs(platform, execution["temporal"]["workflow_id"])
        assert len(runs) >= 3
        assert waiting["temporal"]["run_id"] == runs[-1].run_id
        data(
            await platform.http.post(
                f"/api/v1/Execution/{execution['id']}/signal",
                json={"node_id": "gate", "action": "approve"},
            )
        )
        final = await platform.wait_status(execution["id"], *ENDED)
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and contiguous(events)
    assert kinds(events).count((EventType.HUMAN_WAITING, "gate")) == 1


@pytest.mark.settings(history_events_per_run=100)
async def test_cancel_after_continue_as_new(platform: Platform) -> None:
    async with CountingService() as service:
        workflow_id = await counting_loop(platform, service, turns=1000, think_delay_s=0.05)
        execution = await platform.run(workflow_id)
        await run_number(platform, execution["id"], 2)
        data(await platform.http.post(f"/api/v1/Execution/{execution['id']}/cancel"))
        final = await platform.wait_status(execution["id"], ExecutionStatus.CANCELLED)
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and contiguous(events)
    assert kinds(events)[-1] == (EventType.EXECUTION_CANCELLED, None)
    assert final["temporal"]["run_id"] != execution["temporal"]["run_id"]


@pytest.mark.settings(history_events_per_run=100)
async def test_operator_terminate_after_continue_as_new(platform: Platform) -> None:
    async with CountingService() as service:
        workflow_id = await counting_loop(platform, service, turns=1000, think_delay_s=0.05)
        execution = await platform.run(workflow_id)
        await run_number(platform, execution["id"], 2)
        await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).terminate(
            reason="operator"
        )
        final = await platform.wait_status(execution["id"], ExecutionStatus.FAILED)
    assert final["error"] == "terminated by an operator in Temporal"
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and contiguous(events)


@pytest.mark.settings(history_events_per_run=100)
async def test_sigkill_of_the_worker_after_continue_as_new(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    async with CountingService() as service:
        workflow_id = await counting_loop(platform, service, turns=40)
        execution = await platform.run(workflow_id)
        async with worker_process(platform, **LOOPBACK_TOOLS) as first:
            await run_number(platform, execution["id"], 2)
            first.send_signal(signal.SIGKILL)
            await first.wait()
        async with worker_process(platform, **LOOPBACK_TOOLS):
            final = await platform.wait_status(execution["id"], *ENDED, timeout=180)
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    # The loop ends when the counter tool answers 40. A call in flight at the kill may be
    # made again: its first answer is lost with the worker and the counter skips it.
    assert service.calls["tick"] == 40
    events, code = await platform.watch(execution["id"])
    assert code == 1000 and contiguous(events)
    counts = [
        e["data"]["output"]["body"]["n"]
        for e in events
        if (e["type"], e["node_id"]) == (EventType.NODE_COMPLETED, "tick")
    ]
    # Every turn's completion seen once, in order, up to the bound; one kill skips one
    # number at most.
    assert counts == sorted(set(counts)) and counts[-1] == 40
    assert len(counts) in (39, 40)


@workflow.defn(name="ExecutionWorkflow")
class ChangedWorkflow(ExecutionWorkflow):
    """A bad deploy: the same workflow with a timer first, which no recorded run has."""

    @workflow.run
    async def run(self, params: ExecutionInput) -> ExecutionResult:
        await workflow.sleep(0.01)
        return await super().run(params)


async def gated_workflow(platform: Platform) -> int:
    """a (an agent), then gate (a human node)."""
    agent = await platform.agent("a")
    return await platform.workflow(
        {
            "nodes": [
                {"id": "a", "type": "agent", "agent_id": agent},
                {"id": "gate", "type": "human", "prompt": "go?"},
            ],
            "edges": graphs.chain("a", "gate"),
        }
    )


@contextlib.asynccontextmanager
async def waiting_at_the_gate(
    platform: Platform,
) -> AsyncIterator[tuple[dict[str, Any], async_sessionmaker[AsyncSession]]]:
    """A run of gated_workflow waiting at its gate (brought there by a worker that has
    stopped since), and sessions for the workers the test runs in process next."""
    engine = create_engine(platform.settings.resolved_database_url)
    sessions = session_factory(engine)
    execution = await platform.run(await gated_workflow(platform))
    try:
        async with build_worker(platform.client, platform.settings, sessions):
            waiting = await platform.wait_status(execution["id"], ExecutionStatus.WAITING)
        yield waiting, sessions
    finally:
        await engine.dispose()


def bad_deploy(platform: Platform, sessions: async_sessionmaker[AsyncSession]) -> Worker:
    """A worker with ChangedWorkflow: any run it replays fails its workflow task."""
    nodes, record = NodeActivities(platform.settings, sessions), RecordActivities(sessions)
    return Worker(
        platform.client,
        task_queue=platform.settings.task_queue,
        workflows=[ChangedWorkflow],
        activities=[nodes.llm_call, nodes.call_tool, record.sync_execution],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )


async def test_a_non_deterministic_deploy_shows_in_temporal_problems(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    async with waiting_at_the_gate(platform) as (execution, sessions):
        assert execution["temporal"]["problems"] == []

        async with bad_deploy(platform, sessions):
            # Anything that wakes the run makes the new code replay its history, and fail.
            await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).signal(
                "nudge"
            )

            async def stuck() -> dict[str, Any] | None:
                found = await platform.get(execution["id"])
                return found if found["temporal"]["problems"] else None

            found = await wait_for(stuck, timeout=60, what="temporal.problems")
            assert found["status"] == ExecutionStatus.WAITING
            [problem] = found["temporal"]["problems"]
            assert "workflow task has failed" in problem and "determinis" in problem.lower()

            async def listed() -> list[int] | None:
                page = data(
                    await platform.http.get("/api/v1/Execution/", params={"problems": "true"})
                )
                return [e["id"] for e in page["items"]] or None

            assert await wait_for(listed, timeout=60, what="the problems filter") == [
                execution["id"]
            ]
            health = data(await platform.http.get("/health"))
            assert health["runs_with_problems"] == 1
            await platform.client.get_workflow_handle(
                execution["temporal"]["workflow_id"]
            ).terminate(reason="test finished")


@dataclass
class LongRun:
    """What a run of ``turns`` x (a tick tool, an agent making ``tool_calls`` tool calls
    between two model calls) did, as a watcher connected throughout saw it."""

    calls: int
    seconds: float
    events: list[dict[str, Any]]
    close_code: int | None
    final: dict[str, Any]
    runs: list[Any]  # the Temporal runs of the chain, oldest first
    history_lengths: list[int]
    inputs: list[dict[str, Any]]  # each run's input, as recorded in its history


async def long_run(
    platform: Platform,
    service: HttpToolService,
    turns: int,
    tool_calls: int = 7,
    timeout: float = 600,
) -> LongRun:
    tick = await platform.tool("tick", service.url("tick"))
    probe = await platform.tool("probe", service.url("probe"))
    script = [
        {"tool_calls": [{"name": "probe", "args": {"i": i}} for i in range(tool_calls)]},
        {"reply": "done"},
    ]
    agent = await platform.agent("prober", tool_ids=[probe], metadata={"fake": {"script": script}})
    workflow_id = await platform.workflow(
        graphs.counting_loop(tick, agent, turns, agent_node="probe_all")
    )
    began = time.monotonic()
    execution = await platform.run(workflow_id)
    events, code = await platform.watch(execution["id"], timeout=timeout)
    seconds = time.monotonic() - began
    final = await platform.wait_status(execution["id"], *ENDED)
    runs = await temporal_runs(platform, execution["temporal"]["workflow_id"])
    histories = [
        await platform.client.get_workflow_handle(r.id, run_id=r.run_id).fetch_history()
        for r in runs
    ]
    return LongRun(
        calls=turns * (2 + tool_calls + 1),  # two model calls, the tool calls, the tick
        seconds=seconds,
        events=events,
        close_code=code,
        final=final,
        runs=runs,
        history_lengths=[len(h.events) for h in histories],
        inputs=[_run_input(h) for h in histories],
    )


def _run_input(history: Any) -> dict[str, Any]:
    started = history.events[0].workflow_execution_started_event_attributes
    return dict(json.loads(started.input.payloads[0].data))


def first_scheduled_visit(history_input: dict[str, Any]) -> int:
    """The visit of ``tick`` a run resumed at (1 for the first run of the chain)."""
    resume = history_input.get("resume")
    return int(resume["visits"].get("tick", 0)) + 1 if resume else 1


def assert_long_run_is_whole(
    run: LongRun, service: HttpToolService, turns: int, tool_calls: int = 7
) -> None:
    assert run.final["status"] == ExecutionStatus.COMPLETED, run.final["error"]
    assert run.close_code == 1000 and contiguous(run.events)
    assert kinds(run.events).count((EventType.EXECUTION_STARTED, None)) == 1
    assert service.calls["tick"] == turns and service.calls["probe"] == turns * tool_calls
    assert max(run.history_lengths) <= 10_240, run.history_lengths
    # Each run resumes where the previous one stopped (nothing replayed from START), and
    # carries the same small position whatever its place in the chain.
    visits = [first_scheduled_visit(i) for i in run.inputs]
    assert visits == sorted(set(visits)) and visits[0] == 1, visits
    assert all(not i["memo"] for i in run.inputs)
    sizes = [len(json.dumps(i)) for i in run.inputs[1:]]
    assert max(sizes) < 64_000 and max(sizes) - min(sizes) < 1_000, sizes


@pytest.mark.settings(history_events_per_run=600)
async def test_a_long_run_continues_as_new_at_a_constant_cost(platform: Platform) -> None:
    turns = 40
    async with CountingService() as service:
        run = await long_run(platform, service, turns)
    assert_long_run_is_whole(run, service, turns)
    assert len(run.runs) >= 4, "continued as new at least three times"
    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["llm_calls"] == turns * 2 and usage["tool_calls"] == turns * 8


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("KEEL_TEST_LONG_RUN") != "1",
    reason="10,000 calls: 5-10 minutes on a busy 2-core machine; KEEL_TEST_LONG_RUN=1",
)
async def test_ten_thousand_calls_continue_as_new_and_a_watcher_sees_every_event_once(
    platform_without_worker: Platform,
) -> None:
    platform, turns = platform_without_worker, 1000
    async with CountingService() as service, worker_process(platform, **LOOPBACK_TOOLS):
        run = await long_run(platform, service, turns, timeout=3600)
    assert run.calls >= 10_000
    assert_long_run_is_whole(run, service, turns)
    assert len(run.runs) >= 4, "continued as new at least three times"
    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["llm_calls"] == turns * 2 and usage["tool_calls"] == turns * 8
    execution_id = run.final["id"]
    stored = data(
        await platform.http.get(
            f"/api/v1/Execution/{execution_id}/events", params={"after": len(run.events) - 5}
        )
    )
    assert [e["seq"] for e in stored["items"]] == [e["seq"] for e in run.events[-5:]]


async def test_a_watcher_stays_connected_through_a_failing_workflow_task(
    platform_without_worker: Platform,
) -> None:
    """While a run's workflow task fails (a bad deploy here; a lost worker's task being
    retried in production), Temporal refuses the stream's polls. The watcher's feed polls
    again later instead of failing: one connection sees the run to its end."""
    platform = platform_without_worker
    async with waiting_at_the_gate(platform) as (execution, sessions):
        watcher = asyncio.create_task(platform.watch(execution["id"], timeout=240))

        async with bad_deploy(platform, sessions):
            await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).signal(
                "nudge"
            )

            async def failing() -> bool | None:
                return bool((await platform.get(execution["id"]))["temporal"]["problems"]) or None

            await wait_for(failing, timeout=60, what="the workflow task to fail")
            assert not watcher.done()

        async with build_worker(platform.client, platform.settings, sessions):

            async def answered() -> bool | None:
                response = await platform.http.post(
                    f"/api/v1/Execution/{execution['id']}/signal",
                    json={"node_id": "gate", "action": "approve"},
                )
                return response.status_code == 200 or None

            await wait_for(answered, timeout=90, interval=1, what="the answer to be taken")
            events, code = await watcher
    assert code == 1000 and contiguous(events)
    assert kinds(events)[-1] == (EventType.EXECUTION_COMPLETED, None)
    assert kinds(events).count((EventType.HUMAN_WAITING, "gate")) == 1
