"""Graphs end to end through the REST API and a real WebSocket client."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType as HistoryEvent

from tests.support.engine import Platform
from tests.support.graphs import chain, kinds
from workflows.contracts import ActivityName
from workflows.events import EventType
from workflows.status import ExecutionStatus, NodeStatus


async def test_linear_graph(platform: Platform) -> None:
    researcher = await platform.agent("researcher")
    writer = await platform.agent("writer")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "research",
                    "type": "agent",
                    "agent_id": researcher,
                    "input": "Research {{ input.topic }}",
                },
                {
                    "id": "write",
                    "type": "agent",
                    "agent_id": writer,
                    "input": "Write about: {{ nodes.research.output }}",
                },
            ],
            "edges": chain("research", "write"),
        }
    )
    execution = await platform.run(workflow_id, {"topic": "tides"})
    assert execution["status"] == ExecutionStatus.RUNNING
    assert execution["temporal"]["ui_url"].endswith("/history")

    events, code = await platform.watch(execution["id"])

    assert code == 1000
    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "research"),
        (EventType.USAGE_RECORDED, "research"),
        (EventType.NODE_COMPLETED, "research"),
        (EventType.NODE_STARTED, "write"),
        (EventType.USAGE_RECORDED, "write"),
        (EventType.NODE_COMPLETED, "write"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert all(e["execution_id"] == execution["id"] for e in events)
    assert events[3]["data"]["output"] == "[researcher] Research tides"
    assert events[6]["data"]["output"] == "[writer] Write about: [researcher] Research tides"
    assert events[3]["data"]["attempts"] == 1
    assert isinstance(events[3]["data"]["duration_ms"], int)
    # The offline model counts words: "Research tides" in, "[researcher] Research tides" out.
    assert events[2]["data"]["prompt_tokens"] == 2
    assert events[2]["data"]["completion_tokens"] == 3
    assert events[2]["data"]["cost_usd"] == "0.000000"

    final = await platform.wait_status(execution["id"], "completed")
    assert final["output"] == "[writer] Write about: [researcher] Research tides"
    assert [(n["node_id"], n["status"], n["attempts"]) for n in final["nodes"]] == [
        ("research", "completed", 1),
        ("write", "completed", 1),
    ]
    assert final["finished_at"] is not None

    # Its record was written in the workflow task that ended it (a local activity),
    # without the RECORD_IN_TASK patch: no patch marker, no search-attribute upsert.
    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == HistoryEvent.EVENT_TYPE_MARKER_RECORDED
    ]
    assert markers == ["core_local_activity"]
    assert all(
        e.event_type != HistoryEvent.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        for e in history.events
    )
    assert all(
        e.event_type != HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        or e.activity_task_scheduled_event_attributes.activity_type.name == ActivityName.LLM_CALL
        for e in history.events
    )


async def test_parallel_fan_out_then_join_runs_join_once(platform: Platform) -> None:
    agent = await platform.agent("worker")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": n, "type": "agent", "agent_id": agent, "input": n}
                for n in ("plan", "left", "right", "merge")
            ],
            "edges": [
                {"from": "START", "to": "plan"},
                {"from": "plan", "to": "left"},
                {"from": "plan", "to": "right"},
                {"from": "left", "to": "merge"},
                {"from": "right", "to": "merge"},
                {"from": "merge", "to": "END"},
            ],
        }
    )
    execution = await platform.run(workflow_id)
    events, code = await platform.watch(execution["id"])

    assert code == 1000
    seen = [k for k in kinds(events) if k[0] != EventType.USAGE_RECORDED]
    assert seen[:3] == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "plan"),
        (EventType.NODE_COMPLETED, "plan"),
    ]
    # Both branches start in the same step, before either finishes.
    assert seen[3:5] == [(EventType.NODE_STARTED, "left"), (EventType.NODE_STARTED, "right")]
    assert sorted(seen[5:7]) == [
        (EventType.NODE_COMPLETED, "left"),
        (EventType.NODE_COMPLETED, "right"),
    ]
    assert seen[7:] == [
        (EventType.NODE_STARTED, "merge"),
        (EventType.NODE_COMPLETED, "merge"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert seen.count((EventType.NODE_STARTED, "merge")) == 1
    final = await platform.wait_status(execution["id"], "completed")
    assert final["output"] == "[worker] merge"


async def test_condition_routes_by_data(platform: Platform) -> None:
    agent = await platform.agent("router")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "check",
                    "type": "condition",
                    "routes": [
                        {
                            "when": {"path": "input.priority", "op": "gte", "value": 5},
                            "to": "urgent",
                        }
                    ],
                    "default": "routine",
                },
                {"id": "urgent", "type": "agent", "agent_id": agent, "input": "urgent"},
                {"id": "routine", "type": "agent", "agent_id": agent, "input": "routine"},
            ],
            "edges": [
                {"from": "START", "to": "check"},
                {"from": "urgent", "to": "END"},
                {"from": "routine", "to": "END"},
            ],
        }
    )
    high = await platform.run(workflow_id, {"priority": 9})
    low = await platform.run(workflow_id, {"priority": 1})
    high_events, _ = await platform.watch(high["id"])
    low_events, _ = await platform.watch(low["id"])

    assert kinds(high_events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "check"),
        (EventType.NODE_COMPLETED, "check"),
        (EventType.NODE_STARTED, "urgent"),
        (EventType.USAGE_RECORDED, "urgent"),
        (EventType.NODE_COMPLETED, "urgent"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert high_events[2]["data"]["output"] == {"route": "urgent"}
    assert (EventType.NODE_STARTED, "routine") in kinds(low_events)
    assert (EventType.NODE_STARTED, "urgent") not in kinds(low_events)
    assert (await platform.wait_status(low["id"], "completed"))["output"] == "[router] routine"


async def test_human_approval(platform: Platform) -> None:
    agent = await platform.agent("drafter")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "draft", "type": "agent", "agent_id": agent, "input": "draft"},
                {"id": "approve", "type": "human", "prompt": "Ship {{ nodes.draft.output }}?"},
                {
                    "id": "ship",
                    "type": "agent",
                    "agent_id": agent,
                    "input": "ship ({{ nodes.approve.output.comment }})",
                },
            ],
            "edges": chain("draft", "approve", "ship"),
        }
    )
    execution = await platform.run(workflow_id)
    waiting = await platform.wait_status(execution["id"], "waiting")
    assert {n["node_id"]: n["status"] for n in waiting["nodes"]}["approve"] == "waiting"

    early = await platform.watch_until(execution["id"], EventType.HUMAN_WAITING, "approve")
    assert len(early) == 6
    assert early[-1]["data"]["prompt"] == "Ship [drafter] draft?"

    response = await platform.http.post(
        f"/api/v1/Execution/{execution['id']}/signal",
        json={"node_id": "approve", "action": "approve", "comment": "looks good"},
    )
    assert response.status_code == 200, response.text

    rest, code = await platform.watch(execution["id"], after=6)
    assert code == 1000
    assert kinds(rest) == [
        (EventType.HUMAN_RESPONDED, "approve"),
        (EventType.NODE_COMPLETED, "approve"),
        (EventType.NODE_STARTED, "ship"),
        (EventType.USAGE_RECORDED, "ship"),
        (EventType.NODE_COMPLETED, "ship"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert rest[0]["data"]["action"] == "approve"
    final = await platform.wait_status(execution["id"], "completed")
    assert final["output"] == "[drafter] ship (looks good)"


async def test_human_reject_fails_the_run(platform: Platform) -> None:
    agent = await platform.agent("drafter")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "approve", "type": "human", "prompt": "ok?"},
                {"id": "ship", "type": "agent", "agent_id": agent},
            ],
            "edges": chain("approve", "ship"),
        }
    )
    execution = await platform.run(workflow_id)
    await platform.wait_status(execution["id"], "waiting")
    response = await platform.http.post(
        f"/api/v1/Execution/{execution['id']}/signal",
        json={"node_id": "approve", "action": "reject", "comment": "not yet"},
    )
    assert response.status_code == 200, response.text
    final = await platform.wait_status(execution["id"], "failed")
    assert final["error"] == "rejected at 'approve': not yet"
    events, _ = await platform.watch(execution["id"])
    assert kinds(events)[-2:] == [
        (EventType.NODE_FAILED, "approve"),
        (EventType.EXECUTION_FAILED, "approve"),
    ]


async def test_human_timeout_takes_on_timeout(platform: Platform) -> None:
    agent = await platform.agent("drafter")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "approve",
                    "type": "human",
                    "prompt": "ok?",
                    "timeout_s": 1,
                    "on_timeout": "approve",
                },
                {"id": "ship", "type": "agent", "agent_id": agent, "input": "shipped"},
            ],
            "edges": chain("approve", "ship"),
        }
    )
    execution = await platform.run(workflow_id)
    events, code = await platform.watch(execution["id"])
    assert code == 1000
    responded = next(e for e in events if e["type"] == EventType.HUMAN_RESPONDED)
    assert responded["data"]["timed_out"] is True and responded["data"]["action"] == "approve"
    assert (await platform.wait_status(execution["id"], "completed"))[
        "output"
    ] == "[drafter] shipped"


async def test_node_that_fails_twice_then_succeeds(platform: Platform) -> None:
    flaky = await platform.agent("flaky", metadata={"fake": {"fail_attempts": 2}})
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "try",
                    "type": "agent",
                    "agent_id": flaky,
                    "input": "x",
                    "retry": {"max_attempts": 3, "initial_interval_s": 0.1, "backoff": 1.0},
                }
            ],
            "edges": chain("try"),
        }
    )
    execution = await platform.run(workflow_id)
    events, _ = await platform.watch(execution["id"])

    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "try"),
        (EventType.NODE_RETRYING, "try"),
        (EventType.NODE_RETRYING, "try"),
        (EventType.USAGE_RECORDED, "try"),
        (EventType.NODE_COMPLETED, "try"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    assert [e["data"]["attempt"] for e in events if e["type"] == EventType.NODE_RETRYING] == [2, 3]
    assert "scripted failure on attempt 1" in events[2]["data"]["error"]
    assert events[5]["data"]["attempts"] == 3
    final = await platform.wait_status(execution["id"], "completed")
    assert final["nodes"][0]["attempts"] == 3


async def test_node_that_keeps_failing_fails_the_execution(platform: Platform) -> None:
    broken = await platform.agent("broken", metadata={"fake": {"fail_attempts": 99}})
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "try",
                    "type": "agent",
                    "agent_id": broken,
                    "retry": {"max_attempts": 2, "initial_interval_s": 0.1},
                }
            ],
            "edges": chain("try"),
        }
    )
    execution = await platform.run(workflow_id)
    final = await platform.wait_status(execution["id"], "failed")
    assert "scripted failure on attempt 2" in final["error"]
    assert final["nodes"][0]["status"] == NodeStatus.FAILED and final["nodes"][0]["attempts"] == 2
    events, code = await platform.watch(execution["id"])
    assert code == 1000
    assert kinds(events)[-2:] == [
        (EventType.NODE_FAILED, "try"),
        (EventType.EXECUTION_FAILED, "try"),
    ]


async def test_tool_node_calls_http_and_feeds_a_condition(platform: Platform) -> None:
    from tests.support.fake_http import HttpToolService

    async with HttpToolService() as service:
        lookup = await platform.tool("lookup", service.url("lookup"))
        agent = await platform.agent("summarizer")
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {
                        "id": "lookup",
                        "type": "tool",
                        "tool_id": lookup,
                        "arguments": {"q": "{{ input.q }}", "limit": "{{ input.limit }}"},
                    },
                    {
                        "id": "check",
                        "type": "condition",
                        "routes": [
                            {
                                "when": {
                                    "path": "nodes.lookup.output.status",
                                    "op": "eq",
                                    "value": 200,
                                },
                                "to": "summarize",
                            }
                        ],
                        "default": "END",
                    },
                    {
                        "id": "summarize",
                        "type": "agent",
                        "agent_id": agent,
                        "input": "Summarize {{ nodes.lookup.output.body.echo.q }}",
                    },
                ],
                "edges": [
                    {"from": "START", "to": "lookup"},
                    {"from": "lookup", "to": "check"},
                    {"from": "summarize", "to": "END"},
                ],
            }
        )
        execution = await platform.run(workflow_id, {"q": "tides", "limit": 3})
        final = await platform.wait_status(execution["id"], "completed", "failed")

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"] == "[summarizer] Summarize tides"
    assert service.requests[0]["body"] == {"q": "tides", "limit": 3}  # types kept
    assert service.requests[0]["idempotency_key"] == f"{execution['id']}/lookup/1"
