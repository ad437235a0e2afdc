"""Folding a run's events into its record: the execution's status, result and times,
and one entry per node. Pure, so it is tested on its own (tests/workflows/test_record.py);
``infra.execution_store`` applies it to the database rows, which have these fields.

Folding is order-preserving and total: an event the record does not need (a token
delta, a tool call) changes nothing but may introduce its node. Once the execution
has finished, later events cannot reopen it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from workflows.events import (
    TERMINAL_EVENTS,
    Event,
    EventType,
    ExecutionCompleted,
    ExecutionFailed,
    NodeCompleted,
    NodeFailed,
    NodeRetrying,
)
from workflows.status import FINISHED, ExecutionStatus, NodeStatus


class ExecutionRecord(Protocol):
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    output: Any
    error: str | None


class NodeRecord(Protocol):
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    output: Any
    error: str | None
    reused: bool


N = TypeVar("N", bound=NodeRecord)

# How a terminal event ends the execution, and the nodes still open when it arrives.
ENDING = {
    EventType.EXECUTION_COMPLETED: (ExecutionStatus.COMPLETED, NodeStatus.FAILED),
    EventType.EXECUTION_FAILED: (ExecutionStatus.FAILED, NodeStatus.FAILED),
    EventType.EXECUTION_CANCELLED: (ExecutionStatus.CANCELLED, NodeStatus.CANCELLED),
}
OPEN_NODE = frozenset({NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.WAITING})


def fold(
    execution: ExecutionRecord,
    nodes: MutableMapping[str, N],
    events: Iterable[Event],
    new_node: Callable[[str], N],
) -> None:
    """Apply ``events``, in order, to the execution and its nodes (keyed by node id);
    ``new_node(node_id)`` makes the entry of a node seen for the first time."""
    for item in events:
        node = None
        if item.node_id:
            node = nodes.get(item.node_id)
            if node is None:
                node = nodes[item.node_id] = new_node(item.node_id)
                node.status, node.attempts = NodeStatus.PENDING, 0
        _fold_one(execution, nodes, node, item)


def _fold_one(
    execution: ExecutionRecord, nodes: MutableMapping[str, N], node: N | None, item: Event
) -> None:
    ts = datetime.fromisoformat(item.ts)
    finished = execution.status in FINISHED
    kind = item.type
    if kind == EventType.EXECUTION_STARTED:
        execution.started_at = execution.started_at or ts
        if not finished:
            execution.status = ExecutionStatus.RUNNING
    elif kind == EventType.HUMAN_RESPONDED and not finished:
        execution.status = ExecutionStatus.RUNNING
    elif kind in TERMINAL_EVENTS:
        status, open_nodes_become = ENDING[kind]
        execution.status, execution.finished_at = status, ts
        if kind == EventType.EXECUTION_COMPLETED:
            execution.output = ExecutionCompleted.model_validate(item.data).output
        elif kind == EventType.EXECUTION_FAILED:
            execution.error = ExecutionFailed.model_validate(item.data).error
        for run in nodes.values():
            if run.status in OPEN_NODE:
                run.status, run.finished_at = open_nodes_become, ts
    elif node is not None:
        _fold_node(execution, node, item, ts, finished)


def _fold_node(
    execution: ExecutionRecord, node: NodeRecord, item: Event, ts: datetime, finished: bool
) -> None:
    kind = item.type
    if kind == EventType.NODE_STARTED:
        node.status, node.started_at = NodeStatus.RUNNING, ts
        node.attempts = max(node.attempts, 1)
        node.finished_at, node.error = None, None
    elif kind == EventType.NODE_RETRYING:
        retry = NodeRetrying.model_validate(item.data)
        node.attempts = max(node.attempts, retry.attempt)
        node.error = retry.error
    elif kind == EventType.NODE_COMPLETED:
        completed = NodeCompleted.model_validate(item.data)
        node.status, node.finished_at, node.output = NodeStatus.COMPLETED, ts, completed.output
        node.attempts = max(node.attempts, completed.attempts)
        node.error = None
        node.reused = completed.reused
    elif kind == EventType.NODE_FAILED:
        failed = NodeFailed.model_validate(item.data)
        node.status, node.finished_at, node.error = NodeStatus.FAILED, ts, failed.error
        node.attempts = max(node.attempts, failed.attempts)
    elif kind == EventType.HUMAN_WAITING:
        node.status = NodeStatus.WAITING
        if not finished:
            execution.status = ExecutionStatus.WAITING


def completed_durations_s(events: Iterable[Event]) -> list[float]:
    """How long each node these events complete took, in seconds (for the metric)."""
    return [
        NodeCompleted.model_validate(e.data).duration_ms / 1000
        for e in events
        if e.type == EventType.NODE_COMPLETED
    ]
