"""Builders for workflow definitions, and views of event lists."""

from __future__ import annotations

from itertools import pairwise
from typing import Any


def chain(*node_ids: str) -> list[dict[str, str]]:
    """Edges START -> each node in turn -> END."""
    path = ["START", *node_ids, "END"]
    return [{"from": a, "to": b} for a, b in pairwise(path)]


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Each event as (type, node_id): for asserting exact sequences."""
    return [(e["type"], e["node_id"]) for e in events]


def counting_loop(
    tick: int, agent: int, turns: int, *, agent_node: str = "think", then: str = "END"
) -> dict[str, Any]:
    """tick (a tool answering ``{"n": <calls so far>}``) -> the agent -> ``again``, a
    condition that goes back to tick while n < ``turns`` and on to ``then`` after."""
    n = "nodes.tick.output.body.n"
    return {
        "nodes": [
            {"id": "tick", "type": "tool", "tool_id": tick},
            {"id": agent_node, "type": "agent", "agent_id": agent, "input": f"turn {{{{ {n} }}}}"},
            {
                "id": "again",
                "type": "condition",
                "max_visits": 1000,
                "default": then,
                "routes": [{"when": {"path": n, "op": "lt", "value": turns}, "to": "tick"}],
            },
        ],
        "edges": [*chain("tick", agent_node)[:-1], {"from": agent_node, "to": "again"}],
    }
