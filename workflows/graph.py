"""The LangGraph of a definition: built and compiled once per definition in a worker
process, shared by every run of it.

Compiling a ``StateGraph`` is most of what a run's first workflow task costs (LangGraph
inspects every node function), and would be repeated for every run. So the graph holds
no run: its nodes and routers are the functions below, which look up the
run they work for in LangGraph's config (``configurable[RUN]``, an object with
``run_node`` and ``route``) and hand over to it. The run lends its checkpointer the
same way (``configurable[CHECKPOINTER]``, LangGraph's key for a checkpointer lent
by the caller). The cache lives as long as the worker process (in the tests' checking
sandbox, which re-imports this module, as long as a run); a compiled graph keeps no
state between invocations.

What a run does in a node is ``workflows.execution``'s; the shape here is the
definition's: an edge per definition edge (several sources into one target: a join,
run once after all of them), and a router for every node whose successors depend on
its result (a condition; a human node that may be rejected).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict, defaultdict
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.graph import END, START, StateGraph

from workflows.definition import ConditionNode, Definition, HumanNode

RUN = "keel_run"  # configurable key: the run the graph works for
CHECKPOINTER = CONFIG_KEY_CHECKPOINTER  # configurable key: the run's checkpointer
CACHED_GRAPHS = 256  # compiled graphs kept per worker process (least recently used go)


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    # Parallel branches each write their own node's entry.
    return {**(left or {}), **(right or {})}


class RunState(TypedDict, total=False):
    input: dict[str, Any]
    nodes: Annotated[dict[str, Any], _merge]


class GraphRun(Protocol):
    """What the graph asks of the run it works for."""

    async def run_node(self, node_id: str, state: RunState) -> dict[str, Any]: ...

    async def route(self, node_id: str, state: RunState) -> Any: ...


def routed(node: Any) -> bool:
    """Whether the node's successors are chosen by a router from its result."""
    return isinstance(node, ConditionNode) or (isinstance(node, HumanNode) and bool(node.on_reject))


def _run(config: RunnableConfig) -> GraphRun:
    run: GraphRun = config["configurable"][RUN]
    return run


def _node(node_id: str) -> Any:
    async def node(state: RunState, config: RunnableConfig) -> dict[str, Any]:
        return await _run(config).run_node(node_id, state)

    return node


def _router(node_id: str) -> Any:
    async def route(state: RunState, config: RunnableConfig) -> Any:
        return await _run(config).route(node_id, state)

    return route


def build(definition: Definition) -> Any:
    """The definition's graph, compiled (without a checkpointer: runs lend theirs)."""
    graph: Any = StateGraph(RunState)  # typed loosely: LangGraph's overloads want protocols
    routers = {node.id for node in definition.nodes if routed(node)}
    for node in definition.nodes:
        graph.add_node(node.id, _node(node.id))
    incoming: dict[str, list[str]] = defaultdict(list)
    for edge in definition.edges:
        if edge.source in routers:
            continue  # routed by the node's router below
        incoming[edge.target].append(edge.source)
    for target, sources in incoming.items():
        dest = END if target == "END" else target
        starts = [START if s == "START" else s for s in sources]
        if len(starts) > 1 and dest != END:
            graph.add_edge(starts, dest)  # a join: runs once, after all of them
        else:
            for source in starts:
                graph.add_edge(source, dest)
    for node_id in routers:
        graph.add_conditional_edges(node_id, _router(node_id))
    return graph.compile()


_cache: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()  # workflow tasks run on several threads


def compiled(definition: dict[str, Any], parsed: Definition) -> Any:
    """The compiled graph of ``definition`` (``parsed`` is it, validated), from the cache
    when a run of the same definition compiled it before."""
    key = hashlib.sha256(
        json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    with _lock:
        graph = _cache.get(key)
        if graph is not None:
            _cache.move_to_end(key)
            return graph
    graph = build(parsed)
    with _lock:
        _cache[key] = graph
        while len(_cache) > CACHED_GRAPHS:
            _cache.popitem(last=False)
    return graph
