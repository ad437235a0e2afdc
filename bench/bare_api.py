"""The floor Keel's API is measured against: a bare FastAPI app reading the same rows
from the same database with the same engine (driver, pragmas), served by uvicorn the
same way ``keel api`` is, without our middleware, envelope, schemas or ORM objects.

``/executions`` answers what Keel's page of executions answers, the obvious way: the
20 newest executions, each with its node runs and its usage summed from the ledger
(three queries, plain rows, FastAPI's own JSON).

    python -m bench.bare_api --port 8100 --database-url sqlite+aiosqlite:///...
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from sqlalchemy import func, select

from infra.db import create_engine
from infra.models import Agent, Execution, NodeRun, UsageRecord

AGENTS = Agent.__table__
EXECUTIONS = Execution.__table__
NODE_RUNS = NodeRun.__table__
USAGE = UsageRecord.__table__


def create_app(database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_engine(database_url)
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

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.database_url),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
