"""The execution list: a page with its total, node runs and usage, read in two queries
(api/services/execution_page.py), filtered and confined to the caller's workspace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from api.schemas.common import Envelope, Page
from api.schemas.executions import ExecutionOut
from infra.db import session_factory
from infra.models import DEFAULT_WORKSPACE_ID, Execution, NodeRun, UsageRecord, Workflow, Workspace
from tests.support.responses import data
from workflows.status import ExecutionStatus, NodeStatus

URL = "/api/v1/Execution/"


async def seed(db: AsyncEngine) -> list[int]:
    """Five executions in the default workspace (node runs and usage on some), and one in
    another workspace; their ids, oldest first."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with session_factory(db)() as session:
        other = Workspace(name="other")
        session.add(other)
        await session.flush()
        workflow = Workflow(
            workspace_id=DEFAULT_WORKSPACE_ID,
            name="w",
            version=1,
            definition={"nodes": [], "edges": []},
        )
        foreign = Workflow(
            workspace_id=other.id, name="w", version=1, definition={"nodes": [], "edges": []}
        )
        session.add_all([workflow, foreign])
        await session.flush()
        ids = []
        for i in range(5):
            execution = Execution(
                workspace_id=DEFAULT_WORKSPACE_ID,
                workflow_id=workflow.id,
                workflow_version=1,
                status=ExecutionStatus.COMPLETED if i % 2 == 0 else ExecutionStatus.PENDING,
                input={"i": i},
                output={"done": i} if i % 2 == 0 else None,
                created_at=now + timedelta(seconds=i),
            )
            session.add(execution)
            await session.flush()
            ids.append(execution.id)
            if i % 2 == 0:
                for n in ("b", "a"):  # stored b first: the list keeps the stored order
                    session.add(
                        NodeRun(
                            execution_id=execution.id,
                            node_id=n,
                            status=NodeStatus.COMPLETED,
                            attempts=1,
                            started_at=now,
                            finished_at=now,
                            output={"node": n},
                        )
                    )
                    session.add(
                        UsageRecord(
                            workspace_id=DEFAULT_WORKSPACE_ID,
                            execution_id=execution.id,
                            workflow_id=workflow.id,
                            node_id=n,
                            kind="llm",
                            prompt_tokens=10 + i,
                            completion_tokens=1,
                            total_tokens=11 + i,
                            cost_usd=Decimal("0.000125"),
                            idempotency_key=f"{execution.id}-{n}",
                        )
                    )
        session.add(
            Execution(
                workspace_id=other.id,
                workflow_id=foreign.id,
                workflow_version=1,
                status=ExecutionStatus.COMPLETED,
                input={},
            )
        )
        await session.commit()
        return ids


async def test_a_page_has_its_total_node_runs_and_usage(
    owner_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    client = owner_client
    ids = await seed(db)
    first = data(await client.get(URL, params={"page_size": 2}))
    assert [e["id"] for e in first["items"]] == [ids[4], ids[3]]
    assert (first["total"], first["page"], first["page_size"]) == (5, 1, 2)
    newest = first["items"][0]
    assert [n["node_id"] for n in newest["nodes"]] == ["b", "a"]
    assert newest["nodes"][0]["output"] == {"node": "b"}
    assert newest["nodes"][0]["started_at"] == "2026-01-02T03:04:05+00:00"
    assert newest["usage"] == {"prompt_tokens": 28, "completion_tokens": 2, "cost_usd": "0.000250"}
    assert newest["input"] == {"i": 4} and newest["output"] == {"done": 4}
    assert newest["created_at"] == "2026-01-02T03:04:09+00:00"
    pending = first["items"][1]
    assert pending["nodes"] == [] and pending["output"] is None
    assert pending["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": "0.000000"}

    last = data(await client.get(URL, params={"page_size": 2, "page": 3}))
    assert [e["id"] for e in last["items"]] == [ids[0]] and last["total"] == 5
    past = data(await client.get(URL, params={"page_size": 2, "page": 9}))
    assert past["items"] == [] and past["total"] == 5

    done = data(await client.get(URL, params={"status": ExecutionStatus.COMPLETED.value}))
    assert [e["id"] for e in done["items"]] == [ids[4], ids[2], ids[0]]
    assert done["total"] == 3
    none = data(await client.get(URL, params={"workflow_id": 999}))
    assert none == {"items": [], "total": 0, "page": 1, "page_size": 20}


async def test_a_page_is_what_its_response_model_writes(
    owner_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """The list answers its rows in their JSON form without building models
    (api/schemas/common.ok_json): what it writes must be exactly what the documented
    response model would write, and each item what the execution's own GET answers."""
    client = owner_client
    ids = await seed(db)
    if db.dialect.name == "sqlite":  # its JSON columns take NaN (MariaDB's check refuses it)
        async with session_factory(db)() as session:
            session.add(
                NodeRun(
                    execution_id=ids[0],
                    node_id="odd",
                    status=NodeStatus.COMPLETED,
                    attempts=1,
                    output={"ratio": float("nan"), "peak": float("inf")},
                )
            )
            await session.commit()
    response = await client.get(URL)
    assert b"NaN" not in response.content and b"Infinity" not in response.content
    answered = response.json()
    as_the_model_writes = TypeAdapter(Envelope[Page[ExecutionOut]]).validate_python(answered)
    assert as_the_model_writes.model_dump(mode="json") == answered
    for item in answered["data"]["items"]:
        assert data(await client.get(f"{URL}{item['id']}")) == item
    assert {item["id"] for item in answered["data"]["items"]} == set(ids)
