"""Requests that need Temporal while it has been unreachable since the API started (the
API connects lazily): a clear 503 or the record as it stands, never a 500, and nothing
lost. The test settings point Temporal at 127.0.0.1:1, where nothing listens."""

from __future__ import annotations

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db import session_factory
from infra.models import Execution
from tests.api.test_billing import published_workflow
from tests.api.test_workflows import make_agent
from tests.support.responses import data, error
from workflows.status import ExecutionStatus

URL = "/api/v1/Execution/"


async def test_a_start_is_503_and_the_execution_stays_pending(client: httpx.AsyncClient) -> None:
    workflow_id = await published_workflow(client, await make_agent(client), "w")

    body = error(await client.post(URL, json={"workflow_id": workflow_id, "start": True}), 503)

    assert "did not accept the run" in body["msg"] and "start it again later" in body["msg"]
    (stored,) = data(await client.get(URL))["items"]
    assert stored["status"] == ExecutionStatus.PENDING
    body = error(await client.post(f"{URL}{stored['id']}/start"), 503)
    assert "did not accept the run" in body["msg"]


async def test_a_running_execution_reads_as_recorded_and_problems_are_503(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    workflow_id = await published_workflow(client, await make_agent(client), "w")
    created = data(await client.post(URL, json={"workflow_id": workflow_id}), 201)
    async with session_factory(db)() as session:
        await session.execute(
            update(Execution)
            .where(Execution.id == created["id"])
            .values(status=ExecutionStatus.RUNNING, temporal_workflow_id="keel-gone")
        )
        await session.commit()

    shown = data(await client.get(f"{URL}{created['id']}"))

    assert shown["status"] == ExecutionStatus.RUNNING
    body = error(await client.get(URL, params={"problems": "true"}), 503)
    assert body["msg"].startswith("Temporal did not answer which runs have problems")
