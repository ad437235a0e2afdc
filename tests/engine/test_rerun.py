"""POST /Execution/{id}/rerun: earlier results come back from the memo, costing nothing."""

from __future__ import annotations

from typing import Any

from tests.support.engine import Platform
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain, kinds
from tests.support.responses import data, error
from workflows.events import EventType
from workflows.status import ExecutionStatus

ENDED = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED)


async def rerun(
    platform: Platform, execution_id: int, status: int = 201, **body: Any
) -> dict[str, Any]:
    response = await platform.http.post(f"/api/v1/Execution/{execution_id}/rerun", json=body)
    if status != 201:
        return error(response, status)
    execution = data(response, 201)
    platform.started.append(execution["temporal"]["workflow_id"])
    return execution


async def finished(
    platform: Platform, execution_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    final = await platform.wait_status(execution_id, *ENDED, timeout=60)
    events, code = await platform.watch(execution_id)
    assert code == 1000
    return final, events


def ran(events: list[dict[str, Any]]) -> list[str]:
    """The nodes that really ran (not reused), in order."""
    return [
        e["node_id"]
        for e in events
        if e["type"] == EventType.NODE_COMPLETED and not e["data"].get("reused")
    ]


def reused(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["node_id"]
        for e in events
        if e["type"] == EventType.NODE_COMPLETED and e["data"].get("reused")
    ]


async def three_steps(platform: Platform) -> int:
    agent = await platform.agent("writer")
    return await platform.workflow(
        {
            "nodes": [
                {"id": "outline", "type": "agent", "agent_id": agent, "input": "{{ input.topic }}"},
                {
                    "id": "draft",
                    "type": "agent",
                    "agent_id": agent,
                    "input": "draft {{ nodes.outline.output }}",
                },
                {
                    "id": "polish",
                    "type": "agent",
                    "agent_id": agent,
                    "input": "polish {{ nodes.draft.output }}",
                },
            ],
            "edges": chain("outline", "draft", "polish"),
        }
    )


async def test_rerun_after_a_failure_at_the_last_node_pays_only_for_that_node(
    platform: Platform,
) -> None:
    async with FakeOpenAI(
        [
            Turn(content="one", prompt_tokens=10, completion_tokens=1),
            Turn(content="two", prompt_tokens=20, completion_tokens=2),
            Turn(status=400),
        ]
    ) as llm:
        agent = await platform.agent(
            "assistant",
            provider="openai",
            model="gpt-4o-mini",
            base_url=llm.base_url,
            api_key="sk-test-rerun-key",
            metadata={"stream": False},
        )
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": n, "type": "agent", "agent_id": agent, "input": f"{n} {{{{ x }}}}"}
                    for n in ("first", "second", "last")
                ],
                "edges": chain("first", "second", "last"),
            }
        )
        parent = await platform.run(workflow_id)
        failed, _ = await finished(platform, parent["id"])
        assert failed["status"] == ExecutionStatus.FAILED and len(llm.requests) == 3

        # The fault is fixed: the model answers again.
        llm.turns = [*llm.turns[:3], Turn(content="three", prompt_tokens=30, completion_tokens=3)]
        child = await rerun(platform, parent["id"])
        assert child["parent_execution_id"] == parent["id"]
        final, events = await finished(platform, child["id"])

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"] == "three"
    assert len(llm.requests) == 4  # one model call: the last node's
    assert reused(events) == ["first", "second"] and ran(events) == ["last"]
    completed = [e for e in events if e["type"] == EventType.NODE_COMPLETED]
    assert completed[0]["data"]["from_execution"] == parent["id"]
    assert completed[0]["data"]["output"] == "one"
    assert {n["node_id"]: n["reused"] for n in final["nodes"]} == {
        "first": True,
        "second": True,
        "last": False,
    }
    assert final["usage"]["prompt_tokens"] == 30 and final["usage"]["completion_tokens"] == 3
    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["llm_calls"] == 3  # the parent's two answers and the rerun's one


async def test_rerun_from_a_middle_node_reruns_it_and_what_follows(platform: Platform) -> None:
    workflow_id = await three_steps(platform)
    parent = await platform.run(workflow_id, {"topic": "tides"})
    await finished(platform, parent["id"])

    child = await rerun(platform, parent["id"], from_node="draft")
    final, events = await finished(platform, child["id"])
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert reused(events) == ["outline"] and ran(events) == ["draft", "polish"]
    assert final["workflow_version"] == 1 and final["input"] == {"topic": "tides"}


async def test_edited_input_reruns_only_the_nodes_that_read_it(platform: Platform) -> None:
    agent = await platform.agent("reader")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "left", "type": "agent", "agent_id": agent, "input": "{{ input.a }}"},
                {"id": "right", "type": "agent", "agent_id": agent, "input": "{{ input.b }}"},
                {
                    "id": "join",
                    "type": "agent",
                    "agent_id": agent,
                    "input": "{{ nodes.left.output }} and {{ nodes.right.output }}",
                },
            ],
            "edges": [
                {"from": "START", "to": "left"},
                {"from": "START", "to": "right"},
                {"from": "left", "to": "join"},
                {"from": "right", "to": "join"},
                {"from": "join", "to": "END"},
            ],
        }
    )
    parent = await platform.run(workflow_id, {"a": "sun", "b": "moon"})
    await finished(platform, parent["id"])

    child = await rerun(platform, parent["id"], input={"a": "sun", "b": "stars"})
    final, events = await finished(platform, child["id"])
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert reused(events) == ["left"]
    assert sorted(ran(events)) == ["join", "right"]
    assert final["output"] == "[reader] [reader] sun and [reader] stars"

    # Unchanged input: everything comes from the memo, nothing is called.
    again = await rerun(platform, child["id"])
    final, events = await finished(platform, again["id"])
    assert ran(events) == [] and sorted(reused(events)) == ["join", "left", "right"]
    assert not any(e["type"] == EventType.USAGE_RECORDED for e in events)
    assert final["output"] == "[reader] [reader] sun and [reader] stars"


async def test_rerun_on_a_new_version_reuses_the_unchanged_nodes(platform: Platform) -> None:
    workflow_id = await three_steps(platform)
    parent = await platform.run(workflow_id, {"topic": "tides"})
    await finished(platform, parent["id"])
    current = data(await platform.http.get(f"/api/v1/Workflow/{workflow_id}"))
    definition = current["definition"]
    definition["nodes"][2]["input"] = "polish harder {{ nodes.draft.output }}"
    data(
        await platform.http.put(f"/api/v1/Workflow/{workflow_id}", json={"definition": definition})
    )
    data(await platform.http.post(f"/api/v1/Workflow/{workflow_id}/publish"))

    child = await rerun(platform, parent["id"], version=2)
    final, events = await finished(platform, child["id"])
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["workflow_version"] == 2
    assert reused(events) == ["outline", "draft"] and ran(events) == ["polish"]


async def test_rerun_is_refused_while_running_and_for_an_unknown_node(
    platform: Platform,
) -> None:
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "a", "type": "agent", "agent_id": agent},
                {"id": "gate", "type": "human", "prompt": "go?"},
            ],
            "edges": chain("a", "gate"),
        }
    )
    parent = await platform.run(workflow_id)
    await platform.wait_status(parent["id"], ExecutionStatus.WAITING)
    body = await rerun(platform, parent["id"], 409)
    assert "still waiting" in body["msg"]
    data(
        await platform.http.post(
            f"/api/v1/Execution/{parent['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
        )
    )
    await platform.wait_status(parent["id"], ExecutionStatus.COMPLETED)

    body = await rerun(platform, parent["id"], 422, from_node="nowhere")
    assert "no node 'nowhere'" in body["msg"]
    await rerun(platform, parent["id"], 422, version=9)
    await rerun(platform, parent["id"], 422, from_node="")
    error(await platform.http.post("/api/v1/Execution/987654/rerun", json={}), 404)

    # A human answer is a result too: reused, so the rerun does not wait again.
    child = await rerun(platform, parent["id"])
    final, events = await finished(platform, child["id"])
    assert final["status"] == ExecutionStatus.COMPLETED
    assert (EventType.HUMAN_WAITING, "gate") not in kinds(events)
    assert sorted(reused(events)) == ["a", "gate"]
