"""The database writes of bare Temporal doing Keel's work (the "recorded" runs of
bench/bare_worker.py): what a Keel run writes, written the plainest way, with the same
engine (driver, pragmas) Keel uses and Core statements on Keel's own tables.

- ``ledger``: a node's activity adds the node's usage row, as Keel's model call does
  (one row, one transaction, idempotent by its key).
- ``record``: a local activity at the run's end writes the run's record in one
  transaction: its events, its node runs, and the execution row completed, as Keel's
  last sync does.

Kept out of bench/bare_worker.py: the workflow sandbox re-imports the workflows' module
for every run, and these imports are not the workflows' to pay for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from bench.bare_worker import LEDGER, NODE_COMPLETED, NODE_STARTED, RECORD
from infra.models import Execution, ExecutionEvent, NodeRun, UsageRecord
from workflows.status import ExecutionStatus, NodeStatus


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)  # the workflow's clock, in UTC


class Recorder:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @activity.defn(name=LEDGER)
    async def ledger(self, run: dict[str, Any], node: str) -> str:
        """The node's usage row: what the offline model's answer costs Keel's ledger."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(UsageRecord).prefix_with("OR IGNORE", dialect="sqlite"),
                {
                    "workspace_id": run["workspace_id"],
                    "execution_id": run["execution_id"],
                    "workflow_id": run["workflow_id"],
                    "node_id": node,
                    "kind": "llm",
                    "provider": "fake",
                    "model": "fake",
                    "prompt_tokens": 3,
                    "completion_tokens": 1,
                    "total_tokens": 4,
                    "idempotency_key": f"bare:{run['execution_id']}:{node}:"
                    f"{activity.info().attempt}:0",
                },
            )
        return node

    @activity.defn(name=RECORD)
    async def record(self, run: dict[str, Any], events: list[dict[str, Any]]) -> int:
        """The run's record, in one transaction: its events, its node runs, its row."""
        execution_id = run["execution_id"]
        nodes: dict[str, dict[str, Any]] = {}
        for event in events:
            node = event["node_id"]
            if node is not None:
                row = nodes.setdefault(
                    node,
                    {"execution_id": execution_id, "node_id": node, "attempts": 1},
                )
                if event["type"] == NODE_STARTED:
                    row["started_at"] = _at(event["ts"])
                elif event["type"] == NODE_COMPLETED:
                    row.update(
                        status=NodeStatus.COMPLETED, finished_at=_at(event["ts"]), output=node
                    )
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(ExecutionEvent),
                [
                    {
                        "execution_id": execution_id,
                        "seq": seq,
                        "type": event["type"][:40],
                        "node_id": event["node_id"],
                        "ts": _at(event["ts"]),
                        "data": event,
                    }
                    for seq, event in enumerate(events, start=1)
                ],
            )
            await conn.execute(insert(NodeRun), list(nodes.values()))
            await conn.execute(
                update(Execution)
                .where(Execution.id == execution_id)
                .values(
                    status=ExecutionStatus.COMPLETED,
                    output={"nodes": list(nodes)},
                    finished_at=datetime.now(UTC),
                )
            )
        return len(events)
