"""The memo of finished node visits: what lets a rerun reuse work instead of paying twice.

Each finished agent, tool or human node visit has a key: a hash of the node's id,
its visit number, its definition (and the agent or tool it uses, as snapshotted),
and every value its templates read. Every ``node.completed`` event carries its
visit's ``memo_key``. A rerun starts with a memo built from its parent's recorded
results (``seed_from_events``); a visit whose key is in it returns the kept result
without scheduling an activity, so a node whose definition and inputs did not
change is reused, not paid for again. The same idea as the task-result cache of
Temporal's LangGraph plugin (a hash of the task and its arguments), keyed by what
a Keel node's result depends on.

A run's own visits are not kept: continue-as-new carries where the graph stands
(workflows.handover), not its past. The seed travels through continue-as-new
with only the visits still to come (``still_to_come``).

Pure (no I/O): the workflow and the API both use it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from workflows.contracts import ExecutionInput, MemoEntry, ToolSpec
from workflows.definition import AgentNode, Definition, HumanNode, ToolNode
from workflows.events import Event, EventType, NodeCompleted
from workflows.templates import PLACEHOLDER, lookup

MemoNode = AgentNode | ToolNode | HumanNode
_MISSING_TEXT = "<missing>"
_NOT_THERE = lookup({}, "missing")  # what ``lookup`` answers for a path that is not there


def _texts(node: MemoNode) -> list[str]:
    if isinstance(node, AgentNode):
        return [node.input]
    if isinstance(node, HumanNode):
        return [node.prompt]
    return list(_strings(node.arguments))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def reads(node: MemoNode, context: dict[str, Any]) -> dict[str, Any]:
    """Every value the node's templates read, by path."""
    found: dict[str, Any] = {}
    for text in _texts(node):
        for path in PLACEHOLDER.findall(text):
            value = lookup(context, path)
            found[path] = _MISSING_TEXT if value is _NOT_THERE else value
    return found


def _without_secrets(tool: ToolSpec) -> dict[str, Any]:
    """A tool as the memo hashes it: a sealed value (``{"value", "secret": true}``, masked
    in new runs, ciphertext in older ones) counts only as being there."""
    dumped = tool.model_dump(mode="json")
    config = dict(dumped["config"])
    for field in ("headers", "env"):
        if isinstance(config.get(field), dict):
            config[field] = {
                k: "***" if isinstance(v, dict) and v.get("secret") else v
                for k, v in config[field].items()
            }
    return {**dumped, "config": config}


def _uses(node: MemoNode, params: ExecutionInput) -> Any:
    """The agent or tool (and the agent's tools) the node calls, as the run snapshotted
    them; secrets left out (runs no longer carry them, and a re-sealed key is new
    ciphertext for the same secret)."""
    if isinstance(node, AgentNode):
        agent = params.agents.get(str(node.agent_id))
        if agent is None:
            return None
        tools = [
            _without_secrets(params.tools[str(t)]) for t in agent.tool_ids if str(t) in params.tools
        ]
        return {
            "agent": agent.model_dump(mode="json", exclude={"api_key_encrypted"}),
            "tools": tools,
        }
    if isinstance(node, ToolNode):
        tool = params.tools.get(str(node.tool_id))
        return _without_secrets(tool) if tool else None
    return None


def memo_key(node: MemoNode, visit: int, context: dict[str, Any], params: ExecutionInput) -> str:
    """The key of one visit of one node, as described in the module docstring."""
    material = [
        node.id,
        visit,
        node.model_dump(mode="json", by_alias=True, exclude={"name"}),
        _uses(node, params),
        reads(node, context),
    ]
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def downstream(definition: Definition, node_id: str) -> set[str]:
    """The node and every node control can reach from it."""
    successors = definition.successors()
    seen = {node_id}
    queue = deque([node_id])
    while queue:
        for nxt in successors.get(queue.popleft(), []):
            if nxt not in seen and nxt != "END":
                seen.add(nxt)
                queue.append(nxt)
    return seen


def seed_from_events(
    execution_id: int, events: Iterable[Event], rerun: set[str]
) -> dict[str, MemoEntry]:
    """A rerun's memo: the node visits its parent completed (from the parent's recorded
    ``node.completed`` events, the n-th of a node being its visit n), except those of the
    nodes in ``rerun``."""
    memo: dict[str, MemoEntry] = {}
    visits: Counter[str] = Counter()
    for item in events:
        if item.type != EventType.NODE_COMPLETED or item.node_id is None:
            continue
        visits[item.node_id] += 1
        completed = NodeCompleted.model_validate(item.data)
        if not completed.memo_key or item.node_id in rerun:
            continue
        memo[completed.memo_key] = MemoEntry(
            output=completed.output,
            attempts=completed.attempts,
            from_execution=completed.from_execution or execution_id,
            node_id=item.node_id,
            visit=visits[item.node_id],
        )
    return memo


def still_to_come(memo: dict[str, MemoEntry], visits: dict[str, int]) -> dict[str, MemoEntry]:
    """The entries a run that has made ``visits`` may still use: a node's visit numbers
    only grow, so an entry for a visit already made never matches again."""
    return {
        key: entry
        for key, entry in memo.items()
        if not entry.visit or entry.visit > visits.get(entry.node_id, 0)
    }
