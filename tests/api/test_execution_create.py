"""Creating an execution (without starting it): which published version it pins, and the
answers for a workflow that is not there, not published, or has no such version. The
route reads the workflow and the version in one query (``api.resources.published_version``),
and answers with the execution as created, without reading its node runs or usage."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from api.services.executions import _record_start
from infra.db import session_factory
from infra.models import Execution, Workflow, WorkflowVersion, Workspace
from tests.api.test_billing import published_workflow
from tests.api.test_workflows import create, make_agent, one_agent
from tests.support.responses import data, error
from workflows.status import ExecutionStatus

URL = "/api/v1/Execution/"


async def test_an_execution_pins_the_latest_version_or_the_one_asked(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)
    workflow = await create(client, one_agent(agent, "first"))
    data(await client.post(f"/api/v1/Workflow/{workflow['id']}/publish"))
    second = {"definition": one_agent(agent, "second")}
    data(await client.put(f"/api/v1/Workflow/{workflow['id']}", json=second))
    data(await client.post(f"/api/v1/Workflow/{workflow['id']}/publish"))

    latest = data(await client.post(URL, json={"workflow_id": workflow["id"]}), 201)
    first = data(await client.post(URL, json={"workflow_id": workflow["id"], "version": 1}), 201)

    assert (latest["workflow_id"], latest["workflow_version"]) == (workflow["id"], 2)
    assert (first["workflow_id"], first["workflow_version"]) == (workflow["id"], 1)
    assert latest["status"] == first["status"] == ExecutionStatus.PENDING


async def test_an_unpublished_workflow_is_409_and_a_missing_version_404(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)
    draft = await create(client, one_agent(agent))

    body = error(await client.post(URL, json={"workflow_id": draft["id"]}), 409)
    assert body["msg"] == f"workflow {draft['id']} has no published version; publish it first"
    body = error(await client.post(URL, json={"workflow_id": draft["id"], "version": 1}), 409)
    assert "publish it first" in body["msg"]

    data(await client.post(f"/api/v1/Workflow/{draft['id']}/publish"))
    body = error(await client.post(URL, json={"workflow_id": draft["id"], "version": 3}), 404)
    assert body["msg"] == f"workflow {draft['id']} has no version 3; the latest is 1"

    assert data(await client.get(URL))["total"] == 0  # nothing was stored for them


async def test_a_workflow_elsewhere_or_nowhere_is_404(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    async with session_factory(db)() as session:
        other = Workspace(name="other")
        session.add(other)
        await session.flush()
        foreign = Workflow(
            workspace_id=other.id, name="w", version=1, definition={"nodes": [], "edges": []}
        )
        session.add(foreign)
        await session.flush()
        session.add(
            WorkflowVersion(
                workflow_id=foreign.id, version=1, definition={"nodes": [], "edges": []}
            )
        )
        await session.commit()

    for workflow_id in (foreign.id, 424242, 2**63):
        body = error(await client.post(URL, json={"workflow_id": workflow_id}), 404)
        assert body["msg"] == f"workflow {workflow_id} does not exist"


async def test_a_new_execution_is_answered_as_created_without_reading_nodes_or_usage(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await published_workflow(client, await make_agent(client), "w")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        created = data(await client.post(URL, json={"workflow_id": workflow_id}), 201)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)

    assert created == data(await client.get(f"{URL}{created['id']}"))  # as a read shows it
    assert created["nodes"] == []
    assert not [s for s in statements if "node_runs" in s or "usage_records.execution_id" in s]


async def test_a_start_recorded_after_the_run_recorded_itself_keeps_what_it_recorded(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """The start stores the run's Temporal ids; only a pending execution becomes running
    (a fast run may have recorded its end before the API records its start). Either way
    the start's session holds the row as stored (SQLite: from the update's RETURNING;
    MariaDB: read after the commit)."""
    workflow_id = await published_workflow(client, await make_agent(client), "w")
    pending = data(await client.post(URL, json={"workflow_id": workflow_id}), 201)
    finished = data(await client.post(URL, json={"workflow_id": workflow_id}), 201)
    sessions = session_factory(db)
    async with sessions() as session:
        await session.execute(
            update(Execution)
            .where(Execution.id == finished["id"])
            .values(status=ExecutionStatus.COMPLETED, output={"done": True})
        )
        await session.commit()

    for created, status in (
        (pending, ExecutionStatus.RUNNING),
        (finished, ExecutionStatus.COMPLETED),
    ):
        async with sessions() as session:
            execution = await session.get(Execution, created["id"])
            assert execution is not None and execution.temporal_workflow_id is None
            await _record_start(session, created["id"], f"run-{created['id']}", "r1")
            assert (execution.status, execution.temporal_workflow_id) == (
                status,
                f"run-{created['id']}",
            )
            assert execution.temporal_run_id == "r1" and execution.started_at is not None
        assert data(await client.get(f"{URL}{created['id']}"))["status"] == status
