"""The workflow definition: what clients edit as a draft and publish as a version.

Pure data and pure checks (no I/O), shared by the API, which validates drafts
and publishes, and by the workflow code, which runs a published snapshot.

Shape errors (wrong types, unknown node type) are pydantic errors and apply to
drafts too. Graph rules (reachability, references, cycles) are checked by
:func:`graph_problems` when a draft is published, and every problem is reported
at once.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NODE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
START = "START"
END = "END"
# Agents and tools are rows with 32-bit integer ids (INT on MySQL).
RefId = Annotated[int, Field(ge=1, le=2**31 - 1)]

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetrySpec(_Model):
    """How Temporal retries an agent or tool node's activity."""

    max_attempts: int = Field(default=3, ge=1, le=50)
    initial_interval_s: float = Field(default=1.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval_s: float | None = Field(default=None, gt=0, le=86400)


class _NodeBase(_Model):
    id: str = Field(pattern=NODE_ID_PATTERN)
    name: str | None = Field(default=None, max_length=200, description="Label for people.")


class AgentNode(_NodeBase):
    type: Literal["agent"] = "agent"
    agent_id: RefId
    input: str = Field(default="{{ input }}", max_length=100_000)
    retry: RetrySpec | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)


class ToolNode(_NodeBase):
    type: Literal["tool"] = "tool"
    tool_id: RefId
    arguments: dict[str, Any] = Field(default_factory=dict)
    retry: RetrySpec | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)


class Predicate(_Model):
    path: str = Field(min_length=1, max_length=500)
    op: Operator = "eq"
    value: Any = None


class Route(_Model):
    when: Predicate
    to: str


class ConditionNode(_NodeBase):
    type: Literal["condition"] = "condition"
    routes: list[Route] = Field(default_factory=list)
    default: str | None = None
    # A loop through this node is allowed only with a bound: the execution
    # fails if the node is reached more often than this.
    max_visits: int | None = Field(default=None, ge=1, le=1000)


class HumanNode(_NodeBase):
    type: Literal["human"] = "human"
    prompt: str = Field(default="", max_length=10_000)
    timeout_s: float = Field(default=86400.0, gt=0, le=365 * 86400)
    on_timeout: Literal["approve", "reject"] = "reject"
    on_reject: str | None = None


Node = Annotated[AgentNode | ToolNode | ConditionNode | HumanNode, Field(discriminator="type")]


class Edge(_Model):
    source: str = Field(alias="from")
    target: str = Field(alias="to")


class Definition(_Model):
    nodes: list[Node] = Field(default_factory=list, max_length=500)
    edges: list[Edge] = Field(default_factory=list, max_length=2000)

    def node(self, node_id: str) -> AgentNode | ToolNode | ConditionNode | HumanNode:
        return next(n for n in self.nodes if n.id == node_id)

    def agent_ids(self) -> set[int]:
        return {n.agent_id for n in self.nodes if isinstance(n, AgentNode)}

    def tool_ids(self) -> set[int]:
        return {n.tool_id for n in self.nodes if isinstance(n, ToolNode)}

    def successors(self) -> dict[str, list[str]]:
        """Every way control can leave a node: edges, condition routes, reject routes."""
        out: dict[str, list[str]] = defaultdict(list)
        for edge in self.edges:
            out[edge.source].append(edge.target)
        for node in self.nodes:
            if isinstance(node, ConditionNode):
                out[node.id].extend(route.to for route in node.routes)
                if node.default:
                    out[node.id].append(node.default)
            elif isinstance(node, HumanNode) and node.on_reject:
                out[node.id].append(node.on_reject)
        return out


class Problem(_Model):
    loc: list[str | int]
    msg: str
    type: str


# The node a placeholder such as ``{{ nodes.research.output }}`` reads (workflows.templates).
TEMPLATE_NODE_REF = re.compile(r"\{\{\s*nodes\.([A-Za-z0-9_-]+)")
PATH_NODE_REF = re.compile(r"^nodes\.([A-Za-z0-9_-]+)")


def graph_problems(
    definition: Definition,
    known_agent_ids: Iterable[int] | None = None,
    known_tool_ids: Iterable[int] | None = None,
) -> list[Problem]:
    """Everything that stops ``definition`` from being published, all at once.

    ``known_*_ids`` are the agents and tools that exist; ``None`` skips that check.
    """
    problems: list[Problem] = []

    def add(loc: list[str | int], msg: str, kind: str) -> None:
        problems.append(Problem(loc=["definition", *loc], msg=msg, type=kind))

    ids = [n.id for n in definition.nodes]
    seen: set[str] = set()
    for i, node_id in enumerate(ids):
        if node_id in seen:
            add(["nodes", i, "id"], f"node id {node_id!r} is used more than once", "duplicate_node")
        seen.add(node_id)
    if not definition.nodes:
        add(["nodes"], "a workflow needs at least one node", "empty")
    known = set(ids)

    def check_target(loc: list[str | int], target: str | None, what: str) -> None:
        if target is not None and target not in known and target != END:
            add(loc, f"{what} goes to {target!r}, which is not a node", "unknown_node")

    for i, edge in enumerate(definition.edges):
        if edge.source == END:
            add(["edges", i, "from"], "no edge may leave END", "invalid_edge")
        elif edge.source != START and edge.source not in known:
            add(
                ["edges", i, "from"],
                f"edge starts at {edge.source!r}, which is not a node",
                "unknown_node",
            )
        if edge.target == START:
            add(["edges", i, "to"], "no edge may lead back to START", "invalid_edge")
        else:
            check_target(["edges", i, "to"], edge.target, "edge")
        if edge.source == START and edge.target == END:
            add(["edges", i], "an edge from START straight to END runs nothing", "invalid_edge")

    sources_with_edges = {e.source for e in definition.edges}
    agents = None if known_agent_ids is None else set(known_agent_ids)
    tools = None if known_tool_ids is None else set(known_tool_ids)
    for i, node in enumerate(definition.nodes):
        if isinstance(node, AgentNode) and agents is not None and node.agent_id not in agents:
            add(["nodes", i, "agent_id"], f"agent {node.agent_id} does not exist", "unknown_agent")
        if isinstance(node, ToolNode) and tools is not None and node.tool_id not in tools:
            add(["nodes", i, "tool_id"], f"tool {node.tool_id} does not exist", "unknown_tool")
        if isinstance(node, ConditionNode):
            if not node.routes and node.default is None:
                add(
                    ["nodes", i, "routes"],
                    f"condition {node.id!r} has no routes and no default",
                    "no_routes",
                )
            for r, route in enumerate(node.routes):
                check_target(["nodes", i, "routes", r, "to"], route.to, "route")
                read = PATH_NODE_REF.match(route.when.path)
                if read and read.group(1) not in known:
                    add(
                        ["nodes", i, "routes", r, "when", "path"],
                        f"condition {node.id!r} reads nodes.{read.group(1)}, which is not a node",
                        "unknown_reference",
                    )
            check_target(["nodes", i, "default"], node.default, "default route")
            if node.id in sources_with_edges:
                add(
                    ["nodes", i],
                    f"condition {node.id!r} leaves through its routes and default, "
                    "not through edges",
                    "condition_edge",
                )
        if isinstance(node, HumanNode):
            check_target(["nodes", i, "on_reject"], node.on_reject, "on_reject route")
        for ref in sorted(_template_refs(node)):
            if ref not in known:
                add(
                    ["nodes", i],
                    f"node {node.id!r} reads nodes.{ref}, which is not a node",
                    "unknown_reference",
                )

    successors = definition.successors()
    if not any(e.source == START for e in definition.edges) and definition.nodes:
        add(["edges"], "no edge leaves START", "no_start")
    reachable = _walk(START, successors)
    predecessors: dict[str, list[str]] = defaultdict(list)
    for src, targets in successors.items():
        for dst in targets:
            predecessors[dst].append(src)
    reaches_end = _walk(END, predecessors)
    for i, node in enumerate(definition.nodes):
        if node.id not in reachable:
            add(["nodes", i], f"node {node.id!r} cannot be reached from START", "unreachable")
        elif node.id not in reaches_end:
            add(["nodes", i], f"node {node.id!r} never leads to END", "dead_end")

    # A loop is bounded when it passes a condition with max_visits; so every loop left
    # once those conditions are taken out of the graph is unbounded.
    bounded = {n.id for n in definition.nodes if isinstance(n, ConditionNode) and n.max_visits}
    for component in _cycles(known - bounded, successors):
        path = " -> ".join(_cycle_path(component, successors))
        add(
            ["edges"],
            f"cycle {path} has no bound; route it through a condition node with max_visits",
            "unbounded_cycle",
        )
    return problems


def _template_refs(node: Any) -> set[str]:
    texts: list[str] = []
    if isinstance(node, AgentNode):
        texts.append(node.input)
    elif isinstance(node, ToolNode):
        texts.extend(_strings(node.arguments))
    elif isinstance(node, HumanNode):
        texts.append(node.prompt)
    return {m for text in texts for m in TEMPLATE_NODE_REF.findall(text)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _walk(origin: str, graph: dict[str, list[str]]) -> set[str]:
    seen = {origin}
    queue = deque([origin])
    while queue:
        for nxt in graph.get(queue.popleft(), []):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _cycle_path(component: list[str], graph: dict[str, list[str]]) -> list[str]:
    """One real loop inside a strongly connected component, first node repeated at the end."""
    members = set(component)
    origin = component[0]
    previous: dict[str, str] = {}
    queue = deque([origin])
    while queue:
        current = queue.popleft()
        for nxt in graph.get(current, []):
            if nxt == origin:
                path = [current]
                while path[-1] != origin:
                    path.append(previous[path[-1]])
                return [*reversed(path), origin]
            if nxt in members and nxt not in previous:
                previous[nxt] = current
                queue.append(nxt)
    return [*component, origin]  # unreachable for a real component


def _cycles(nodes: set[str], graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that form a loop (Tarjan), each as a node list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, []):
                found.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found
