"""Graphs end to end through the REST API and a real WebSocket client."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from tests.engine.conftest import Platform


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["node_id"]) for e in events]


def chain(*node_ids: str) -> list[dict[str, str]]:
    path = ["START", *node_ids, "END"]
    return [{"from": a, "to": b} for a, b in pairwise(path)]


async def test_linear_graph(platform: Platform) -> None:
    researcher = await platform.agent("researcher")
    writer = await platform.agent("writer")
    workflow_id = await platform.workflow({
        "nodes": [
            {"id": "research", "type": "agent", "agent_id": researcher,
             "input": "Research {{ input.topic }}"},
            {"id": "write", "type": "agent", "agent_id": writer,
             "input": "Write about: {{ nodes.research.output }}"},
        ],
        "edges": chain("research", "write"),
    })
    execution = await platform.run(workflow_id, {"topic": "tides"})
    assert execution["status"] == "running"
    assert execution["temporal"]["ui_url"].endswith("/history")

    events, code = await platform.watch(execution["id"])

    assert code == 1000
    assert kinds(events) == [
        ("execution.started", None),
        ("node.started", "research"), ("node.completed", "research"),
        ("node.started", "write"), ("node.completed", "write"),
        ("execution.completed", None),
    ]
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert all(e["execution_id"] == execution["id"] for e in events)
    assert events[2]["data"]["output"] == "[researcher] Research tides"
    assert events[4]["data"]["output"] == "[writer] Write about: [researcher] Research tides"
    assert events[2]["data"]["attempts"] == 1
    assert isinstance(events[2]["data"]["duration_ms"], int)

    final = await platform.wait_status(execution["id"], "completed")
    assert final["output"] == "[writer] Write about: [researcher] Research tides"
    assert [(n["node_id"], n["status"], n["attempts"]) for n in final["nodes"]] == [
        ("research", "completed", 1), ("write", "completed", 1)]
    assert final["finished_at"] is not None
