"""graph_problems: every rule publishing enforces, as pure unit tests."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from workflows.definition import Definition, Problem, graph_problems

# The example from the contract (docs/api.md), with agent 1 and tool 2.
CONTRACT_EXAMPLE: dict[str, Any] = {
    "nodes": [
        {
            "id": "research",
            "type": "agent",
            "agent_id": 1,
            "input": "Research {{ input.topic }}",
            "retry": {"max_attempts": 3, "initial_interval_s": 1, "backoff": 2.0},
            "timeout_s": 120,
        },
        {
            "id": "lookup",
            "type": "tool",
            "tool_id": 2,
            "arguments": {"q": "{{ nodes.research.output }}"},
        },
        {
            "id": "check",
            "type": "condition",
            "routes": [
                {
                    "when": {"path": "nodes.lookup.output.status", "op": "eq", "value": 200},
                    "to": "summarize",
                }
            ],
            "default": "approve",
        },
        {
            "id": "approve",
            "type": "human",
            "prompt": "Publish this summary?",
            "timeout_s": 86400,
            "on_timeout": "reject",
        },
        {
            "id": "summarize",
            "type": "agent",
            "agent_id": 1,
            "input": "Summarize {{ nodes.lookup.output }}",
        },
    ],
    "edges": [
        {"from": "START", "to": "research"},
        {"from": "research", "to": "lookup"},
        {"from": "lookup", "to": "check"},
        {"from": "approve", "to": "summarize"},
        {"from": "summarize", "to": "END"},
    ],
}


def agent(node_id: str, agent_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "agent", "agent_id": agent_id, **extra}


def edges(*pairs: str) -> list[dict[str, str]]:
    """edges("START>a", "a>END") -> [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]"""
    return [{"from": p.split(">")[0], "to": p.split(">")[1]} for p in pairs]


def problems(
    definition: dict[str, Any], agents: set[int] | None = None, tools: set[int] | None = None
) -> list[Problem]:
    return graph_problems(Definition.model_validate(definition), agents, tools)


def kinds(found: list[Problem]) -> list[tuple[str, list[str | int]]]:
    return [(p.type, p.loc) for p in found]


def test_contract_example_is_valid() -> None:
    assert problems(CONTRACT_EXAMPLE, agents={1}, tools={2}) == []


def test_linear_and_parallel_graphs_are_valid() -> None:
    assert problems({"nodes": [agent("a")], "edges": edges("START>a", "a>END")}) == []
    fan_out_in = {
        "nodes": [agent("a"), agent("b"), agent("c"), agent("d")],
        "edges": edges("START>a", "a>b", "a>c", "b>d", "c>d", "d>END"),
    }
    assert problems(fan_out_in, agents={1}) == []


def test_empty_definition() -> None:
    assert kinds(problems({})) == [("empty", ["definition", "nodes"])]


def test_no_edge_from_start() -> None:
    found = problems({"nodes": [agent("a")], "edges": edges("a>END")})
    assert ("no_start", ["definition", "edges"]) in kinds(found)
    assert ("unreachable", ["definition", "nodes", 0]) in kinds(found)


def test_unreachable_node() -> None:
    found = problems(
        {"nodes": [agent("a"), agent("lonely")], "edges": edges("START>a", "a>END", "lonely>END")}
    )
    assert kinds(found) == [("unreachable", ["definition", "nodes", 1])]
    assert "'lonely' cannot be reached from START" in found[0].msg


def test_node_that_never_reaches_end() -> None:
    found = problems(
        {"nodes": [agent("a"), agent("stuck")], "edges": edges("START>a", "a>END", "a>stuck")}
    )
    assert kinds(found) == [("dead_end", ["definition", "nodes", 1])]
    assert "'stuck' never leads to END" in found[0].msg


def test_unknown_agent_and_tool() -> None:
    definition = {
        "nodes": [agent("a", agent_id=7), {"id": "t", "type": "tool", "tool_id": 9}],
        "edges": edges("START>a", "a>t", "t>END"),
    }
    found = problems(definition, agents={1}, tools={2})
    assert kinds(found) == [
        ("unknown_agent", ["definition", "nodes", 0, "agent_id"]),
        ("unknown_tool", ["definition", "nodes", 1, "tool_id"]),
    ]
    assert found[0].msg == "agent 7 does not exist"
    assert found[1].msg == "tool 9 does not exist"
    # None means "not checked": the pure graph is fine.
    assert problems(definition) == []


def test_duplicate_node_id() -> None:
    found = problems({"nodes": [agent("a"), agent("a")], "edges": edges("START>a", "a>END")})
    assert kinds(found) == [("duplicate_node", ["definition", "nodes", 1, "id"])]


def test_edges_to_and_from_nonexistent_nodes() -> None:
    found = problems(
        {"nodes": [agent("a")], "edges": edges("START>a", "a>END", "a>ghost", "phantom>a")}
    )
    assert kinds(found) == [
        ("unknown_node", ["definition", "edges", 2, "to"]),
        ("unknown_node", ["definition", "edges", 3, "from"]),
    ]
    assert "'ghost', which is not a node" in found[0].msg


def test_invalid_edges_are_reported_once_each() -> None:
    found = problems(
        {"nodes": [agent("a")], "edges": edges("START>a", "a>END", "END>a", "a>START", "START>END")}
    )
    assert kinds(found) == [
        ("invalid_edge", ["definition", "edges", 2, "from"]),
        ("invalid_edge", ["definition", "edges", 3, "to"]),
        ("invalid_edge", ["definition", "edges", 4]),
    ]


def test_unbounded_cycle() -> None:
    found = problems(
        {
            "nodes": [agent("a"), agent("b"), agent("c")],
            "edges": edges("START>a", "a>c", "c>b", "b>a", "b>END"),
        }
    )
    assert kinds(found) == [("unbounded_cycle", ["definition", "edges"])]
    # The message shows a loop that really exists, in edge order.
    assert "cycle a -> c -> b -> a has no bound" in found[0].msg


def test_self_loop_is_an_unbounded_cycle() -> None:
    found = problems({"nodes": [agent("a")], "edges": edges("START>a", "a>a", "a>END")})
    assert kinds(found) == [("unbounded_cycle", ["definition", "edges"])]
    assert "cycle a -> a" in found[0].msg


def loop_through_check(max_visits: int | None) -> dict[str, Any]:
    check: dict[str, Any] = {
        "id": "check",
        "type": "condition",
        "routes": [
            {"when": {"path": "nodes.draft.output.ok", "op": "eq", "value": False}, "to": "draft"}
        ],
        "default": "END",
    }
    if max_visits is not None:
        check["max_visits"] = max_visits
    return {"nodes": [agent("draft"), check], "edges": edges("START>draft", "draft>check")}


def test_cycle_through_condition_with_max_visits_is_accepted() -> None:
    assert problems(loop_through_check(max_visits=3), agents={1}) == []


def test_cycle_through_condition_without_max_visits_is_refused() -> None:
    found = problems(loop_through_check(max_visits=None), agents={1})
    assert kinds(found) == [("unbounded_cycle", ["definition", "edges"])]


def test_bound_on_one_loop_does_not_excuse_another_loop() -> None:
    # draft <-> review is a second loop that never passes the bounded condition.
    definition = loop_through_check(max_visits=3)
    definition["nodes"].append(agent("review"))
    definition["edges"] += edges("draft>review", "review>draft")
    found = problems(definition, agents={1})
    assert kinds(found) == [("unbounded_cycle", ["definition", "edges"])]
    assert "draft -> review -> draft" in found[0].msg


def test_condition_routes_to_nowhere() -> None:
    definition = {
        "nodes": [
            agent("a"),
            {
                "id": "check",
                "type": "condition",
                "routes": [{"when": {"path": "input.x", "op": "exists"}, "to": "nowhere"}],
                "default": "elsewhere",
            },
            {"id": "idle", "type": "condition"},
        ],
        "edges": edges("START>a", "a>check", "a>idle"),
    }
    found = problems(definition)
    assert ("unknown_node", ["definition", "nodes", 1, "routes", 0, "to"]) in kinds(found)
    assert ("unknown_node", ["definition", "nodes", 1, "default"]) in kinds(found)
    assert ("no_routes", ["definition", "nodes", 2, "routes"]) in kinds(found)


def test_condition_must_not_have_outgoing_edges() -> None:
    definition = loop_through_check(max_visits=2)
    definition["edges"] += edges("check>END")
    assert ("condition_edge", ["definition", "nodes", 1]) in kinds(problems(definition))


def test_human_on_reject_to_nowhere() -> None:
    definition = {
        "nodes": [{"id": "ok", "type": "human", "on_reject": "ghost"}],
        "edges": edges("START>ok", "ok>END"),
    }
    assert kinds(problems(definition)) == [
        ("unknown_node", ["definition", "nodes", 0, "on_reject"])
    ]


@pytest.mark.parametrize(
    "text",
    [
        "{{ nodes.nope.output }}",
        "{{nodes.nope}}",
        "first {{ nodes.a.output }} then {{ nodes.nope.output }}",
        "{{ nodes.Nope.output }}",
    ],
)
def test_template_referencing_unknown_node(text: str) -> None:
    definition = {
        "nodes": [agent("a"), agent("b", input=text)],
        "edges": edges("START>a", "a>b", "b>END"),
    }
    found = problems(definition)
    assert kinds(found) == [("unknown_reference", ["definition", "nodes", 1])]
    assert "nodes.nope, which is not a node" in found[0].msg.lower()


def test_templates_in_tool_arguments_and_human_prompt_are_checked() -> None:
    definition = {
        "nodes": [
            {
                "id": "t",
                "type": "tool",
                "tool_id": 1,
                "arguments": {"deep": [{"q": "{{ nodes.missing_a.output }}"}]},
            },
            {"id": "h", "type": "human", "prompt": "OK? {{ nodes.missing_b.output }}"},
        ],
        "edges": edges("START>t", "t>h", "h>END"),
    }
    assert [p.msg for p in problems(definition)] == [
        "node 't' reads nodes.missing_a, which is not a node",
        "node 'h' reads nodes.missing_b, which is not a node",
    ]


def test_condition_path_referencing_unknown_node() -> None:
    definition = loop_through_check(max_visits=2)
    definition["nodes"][1]["routes"][0]["when"]["path"] = "nodes.drfat.output.ok"
    assert kinds(problems(definition)) == [
        ("unknown_reference", ["definition", "nodes", 1, "routes", 0, "when", "path"])
    ]


def test_every_problem_is_reported_at_once() -> None:
    definition = {
        "nodes": [
            agent("a", agent_id=5, input="{{ nodes.nope.output }}"),
            agent("a"),
            {"id": "t", "type": "tool", "tool_id": 6},
            {
                "id": "check",
                "type": "condition",
                "routes": [{"when": {"path": "input.x"}, "to": "void"}],
            },
            agent("island"),
            agent("loop_x"),
            agent("loop_y"),
        ],
        "edges": edges(
            "START>a",
            "a>t",
            "a>check",
            "a>ghost",
            "a>loop_x",
            "loop_x>loop_y",
            "loop_y>loop_x",
            "loop_y>END",
        ),
    }
    found = {p.type for p in problems(definition, agents={1}, tools=set())}
    assert found == {
        "duplicate_node",
        "unknown_node",
        "unknown_agent",
        "unknown_tool",
        "unknown_reference",
        "unreachable",
        "dead_end",
        "unbounded_cycle",
    }


@pytest.mark.parametrize(
    ("definition", "where"),
    [
        ({"nodes": [agent("Bad-Id")]}, "id"),
        ({"nodes": [agent("9lives")]}, "id"),
        ({"nodes": [{"id": "x", "type": "robot"}]}, "nodes"),
        ({"nodes": [agent("a", agent_id=0)]}, "agent_id"),
        ({"nodes": [agent("a", colour="red")]}, "colour"),
        ({"edges": [{"from": "START"}]}, "to"),
        (
            {
                "nodes": [
                    {
                        "id": "c",
                        "type": "condition",
                        "routes": [{"when": {"path": "x", "op": "like"}, "to": "END"}],
                    }
                ]
            },
            "op",
        ),
    ],
)
def test_shape_errors_are_caught_before_publishing(definition: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Definition.model_validate(definition)
    assert any(where in [str(part) for part in e["loc"]] for e in caught.value.errors()), (
        caught.value.errors()
    )
