"""The floor Keel's API is measured against: a bare FastAPI app reading the same rows
from the same database with the same engine (driver, pragmas), served by uvicorn the
same way ``keel api`` is, without our middleware, envelope, schemas or ORM objects.

``/executions`` answers what Keel's page of executions answers, the obvious way: the
20 newest executions, each with its node runs and its usage summed from the ledger
(three queries, plain rows, FastAPI's own JSON).

With a Temporal address it also fronts the "recorded" runs of bench/bare_worker.py,
as Keel's API fronts Keel's: ``POST /runs/{shape}`` stores the execution row, starts
the run and records its Temporal id; ``/runs/{temporal id}/events`` is a WebSocket
that follows the run's stream (the SDK's ``subscribe``, Keel's pause between polls)
and sends each event as JSON until the last one.

    python -m bench.bare_api --port 8100 --database-url sqlite+aiosqlite:///... \
        [--temporal-address 127.0.0.1:7233 --task-queue bench-bare]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, WebSocket
from sqlalchemy import func, insert, select, update
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from api.services.event_hub import POLL_COOLDOWN
from bench.bare_worker import (
    CHAIN_LENGTH,
    DIAMOND_WIDTH,
    EVENTS_TOPIC,
    LAST_EVENT,
    TASK_QUEUE,
    recorded_queue,
)
from infra.db import create_engine
from infra.models import Agent, Execution, NodeRun, UsageRecord, Workflow
from workflows.status import ExecutionStatus

AGENTS = Agent.__table__
EXECUTIONS = Execution.__table__
NODE_RUNS = NodeRun.__table__
USAGE = UsageRecord.__table__
WORKFLOWS = Workflow.__table__


# The recorded runs, by shape: their workflow and its first argument (as bench.scenarios
# runs the bare shapes).
RECORDED = {
    "chain": ("BareRecordedChain", CHAIN_LENGTH),
    "diamond": ("BareRecordedDiamond", DIAMOND_WIDTH),
}


def create_app(
    database_url: str, temporal_address: str | None = None, task_queue: str = TASK_QUEUE
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_engine(database_url)
        app.state.temporal = await Client.connect(temporal_address) if temporal_address else None
        yield
        await app.state.engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/agent/{agent_id}")
    async def agent(agent_id: int, request: Request) -> dict[str, Any]:
        async with request.app.state.engine.connect() as conn:
            row = (
                (await conn.execute(select(AGENTS).where(AGENTS.c.id == agent_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise HTTPException(404)
        return dict(row)

    @app.get("/executions")
    async def executions(request: Request) -> list[dict[str, Any]]:
        async with request.app.state.engine.connect() as conn:
            page = [
                {**row, "nodes": []}
                for row in (
                    await conn.execute(
                        select(EXECUTIONS).order_by(EXECUTIONS.c.id.desc()).limit(20)
                    )
                ).mappings()
            ]
            by_id = {row["id"]: row for row in page}
            for node in (
                await conn.execute(
                    select(NODE_RUNS)
                    .where(NODE_RUNS.c.execution_id.in_(list(by_id)))
                    .order_by(NODE_RUNS.c.id)
                )
            ).mappings():
                by_id[node["execution_id"]]["nodes"].append(dict(node))
            for usage in (
                await conn.execute(
                    select(
                        USAGE.c.execution_id,
                        func.sum(USAGE.c.prompt_tokens).label("prompt_tokens"),
                        func.sum(USAGE.c.completion_tokens).label("completion_tokens"),
                        func.sum(USAGE.c.cost_usd).label("cost_usd"),
                    )
                    .where(USAGE.c.execution_id.in_(list(by_id)))
                    .group_by(USAGE.c.execution_id)
                )
            ).mappings():
                by_id[usage["execution_id"]]["usage"] = dict(usage)
            return page

    @app.post("/runs/{shape}")
    async def start_run(shape: str, workflow_id: int, request: Request) -> dict[str, Any]:
        """A recorded run of ``shape`` as an execution of the published workflow
        ``workflow_id`` (its row read, as Keel reads the version it runs)."""
        client: Client | None = request.app.state.temporal
        if client is None or shape not in RECORDED:
            raise HTTPException(404)
        engine = request.app.state.engine
        async with engine.begin() as conn:
            workflow = (
                (
                    await conn.execute(
                        select(WORKFLOWS.c.workspace_id, WORKFLOWS.c.version).where(
                            WORKFLOWS.c.id == workflow_id
                        )
                    )
                )
                .mappings()
                .first()
            )
            if workflow is None:
                raise HTTPException(404)
            execution_id = (
                await conn.execute(
                    insert(Execution).values(
                        workspace_id=workflow["workspace_id"],
                        workflow_id=workflow_id,
                        workflow_version=workflow["version"],
                        status=ExecutionStatus.PENDING,
                        input={},
                    )
                )
            ).inserted_primary_key[0]
        name, arg = RECORDED[shape]
        run = {
            "execution_id": execution_id,
            "workspace_id": workflow["workspace_id"],
            "workflow_id": workflow_id,
        }
        temporal_id = f"recorded-{execution_id}"
        handle = await client.start_workflow(
            name, args=[arg, run], id=temporal_id, task_queue=recorded_queue(task_queue)
        )
        async with engine.begin() as conn:
            await conn.execute(
                update(Execution)
                .where(Execution.id == execution_id)
                .values(
                    status=ExecutionStatus.RUNNING,
                    temporal_workflow_id=temporal_id,
                    temporal_run_id=handle.result_run_id,
                )
            )
        return {"id": execution_id, "temporal_workflow_id": temporal_id}

    @app.websocket("/runs/{temporal_id}/events")
    async def run_events(websocket: WebSocket, temporal_id: str) -> None:
        client: Client = websocket.app.state.temporal
        await websocket.accept()
        stream = WorkflowStreamClient.create(client, temporal_id)
        async for item in stream.subscribe(
            EVENTS_TOPIC, result_type=dict, poll_cooldown=POLL_COOLDOWN
        ):
            await websocket.send_text(json.dumps({"seq": item.offset + 1, **item.data}))
            if item.data["type"] == LAST_EVENT:
                break
        await websocket.close()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--temporal-address", help="fronts the recorded runs")
    parser.add_argument("--task-queue", default=TASK_QUEUE, help="the bare worker's")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.database_url, args.temporal_address, args.task_queue),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
