"""The database record of a run, folded from its events.

One writer path for execution state: events (from the run's stream) are stored
and folded into the execution row and its node runs. Folding is idempotent:
events already stored (by ``seq``) are skipped, so a retried or replayed sync
changes nothing, and the record outlives Temporal's history retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.models import Execution, ExecutionEvent, NodeRun
from workflows.events import EventType

FINISHED = frozenset({"completed", "failed", "cancelled"})
ACTIVE = ("pending", "running", "waiting")


async def last_seq(session: AsyncSession, execution_id: int) -> int:
    value = await session.scalar(
        select(func.max(ExecutionEvent.seq)).where(ExecutionEvent.execution_id == execution_id)
    )
    return int(value or 0)


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["ts"]))


async def apply_events(session: AsyncSession, execution: Execution,
                       events: list[dict[str, Any]]) -> int:
    """Store events newer than what is stored and fold them in. Returns how many were new."""
    done = await last_seq(session, execution.id)
    fresh = [e for e in events if e["seq"] > done]
    if not fresh:
        return 0
    nodes = {
        run.node_id: run
        for run in await session.scalars(
            select(NodeRun).where(NodeRun.execution_id == execution.id)
        )
    }
    for event in fresh:
        session.add(ExecutionEvent(
            execution_id=execution.id, seq=event["seq"], type=event["type"],
            node_id=event.get("node_id"), ts=_ts(event), data=event.get("data") or {},
        ))
        _fold(execution, nodes, event)
    for run in nodes.values():
        if run.id is None:
            session.add(run)
    return len(fresh)


def _node(execution: Execution, nodes: dict[str, NodeRun], node_id: str) -> NodeRun:
    if node_id not in nodes:
        nodes[node_id] = NodeRun(execution_id=execution.id, node_id=node_id, status="pending",
                                 attempts=0)
    return nodes[node_id]


def _fold(execution: Execution, nodes: dict[str, NodeRun], event: dict[str, Any]) -> None:
    kind = event["type"]
    data = event.get("data") or {}
    ts = _ts(event)
    node = _node(execution, nodes, event["node_id"]) if event.get("node_id") else None
    finished = execution.status in FINISHED

    if kind == EventType.EXECUTION_STARTED:
        execution.started_at = execution.started_at or ts
        if not finished:
            execution.status = "running"
    elif kind == EventType.NODE_STARTED and node:
        node.status, node.started_at = "running", ts
        node.attempts = max(node.attempts, 1)
        node.finished_at, node.error = None, None
    elif kind == EventType.NODE_RETRYING and node:
        node.attempts = max(node.attempts, int(data.get("attempt", 0)))
        node.error = data.get("error")
    elif kind == EventType.NODE_COMPLETED and node:
        node.status, node.finished_at, node.output = "completed", ts, data.get("output")
        node.attempts = max(node.attempts, int(data.get("attempts", 1)))
        node.error = None
        node.reused = bool(data.get("reused"))
    elif kind == EventType.NODE_FAILED and node:
        node.status, node.finished_at, node.error = "failed", ts, data.get("error")
        node.attempts = max(node.attempts, int(data.get("attempts", 1)))
    elif kind == EventType.HUMAN_WAITING and node:
        node.status = "waiting"
        if not finished:
            execution.status = "waiting"
    elif kind == EventType.HUMAN_RESPONDED and not finished:
        execution.status = "running"
    elif kind in (EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED,
                  EventType.EXECUTION_CANCELLED):
        execution.status = {
            EventType.EXECUTION_COMPLETED: "completed",
            EventType.EXECUTION_FAILED: "failed",
            EventType.EXECUTION_CANCELLED: "cancelled",
        }[EventType(kind)]
        execution.finished_at = ts
        if kind == EventType.EXECUTION_COMPLETED:
            execution.output = data.get("output")
        elif kind == EventType.EXECUTION_FAILED:
            execution.error = data.get("error")
        for run in nodes.values():
            if run.status in ("running", "waiting", "pending"):
                run.status = "cancelled" if kind == EventType.EXECUTION_CANCELLED else "failed"
                run.finished_at = ts
