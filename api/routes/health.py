"""``GET /health``: the database, Temporal and the workers polling Keel's task queue.

Degraded (503) while any of them is missing: with no worker polling, runs would be
accepted and wait. The Temporal answer (DescribeTaskQueue's pollers) is cached for
a moment, so frequent probes from load balancers stay cheap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError, RPCStatusCode

from api.schemas.common import Envelope
from api.services.problems import count_runs_with_problems

router = APIRouter(tags=["Health"])
CHECK_TIMEOUT_S = 3.0
TEMPORAL_CACHE_S = 2.0
# A live worker starts a new long poll at least once a minute (the server answers an
# idle poll after 60 s); Temporal keeps listing a dead worker's last poll for minutes.
POLLER_FRESH_S = 80.0


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    db: str
    temporal: str
    workers: int
    # Runs Temporal reports as unable to advance (see an execution's temporal.problems).
    runs_with_problems: int = 0


async def _db(request: Request) -> str:
    try:
        async with request.app.state.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), CHECK_TIMEOUT_S)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"[:300]


async def _temporal(request: Request) -> tuple[str, int, int]:
    """Temporal's state, the number of workers polling and of runs Temporal reports as
    unable to advance, from the last few seconds."""
    state = request.app.state
    cached: tuple[float, tuple[str, int, int]] | None = getattr(state, "health_temporal", None)
    if cached is not None and time.monotonic() - cached[0] < TEMPORAL_CACHE_S:
        return cached[1]
    temporal, workers = await _describe_task_queue(request)
    stuck = (
        await count_runs_with_problems(state.temporal, state.settings.workflow_id_prefix)
        if temporal == "ok"
        else 0
    )
    answer = (temporal, workers, stuck)
    state.health_temporal = (time.monotonic(), answer)
    return answer


async def _describe_task_queue(request: Request) -> tuple[str, int]:
    settings = request.app.state.settings
    client = request.app.state.temporal
    try:
        response = await asyncio.wait_for(
            client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=settings.temporal_namespace,
                    task_queue=TaskQueue(name=settings.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            ),
            CHECK_TIMEOUT_S,
        )
        return "ok", live_workers(response.pollers, time.time())
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        # A server that answers with an error (say, an unknown namespace) is not unreachable.
        answered = isinstance(exc, RPCError) and exc.status != RPCStatusCode.UNAVAILABLE
        where = "error from" if answered else "unreachable at"
        return f"{where} {settings.temporal_address}: {reason}"[:300], 0


def live_workers(pollers: Iterable[PollerInfo], now: float) -> int:
    """Workers (by identity) that polled within POLLER_FRESH_S of ``now`` (epoch s)."""
    return len(
        {
            poller.identity
            for poller in pollers
            if now - poller.last_access_time.ToMicroseconds() / 1e6 < POLLER_FRESH_S
        }
    )


@router.get(
    "/health",
    response_model=Envelope[Health],
    responses={503: {"model": Envelope[Health]}},
    summary="Database, Temporal and worker status (503 when degraded: no worker too)",
)
async def health(request: Request) -> Any:
    db, (temporal, workers, stuck) = await asyncio.gather(_db(request), _temporal(request))
    healthy = db == "ok" and temporal == "ok" and workers > 0
    data = Health(
        status="ok" if healthy else "degraded",
        db=db,
        temporal=temporal,
        workers=workers,
        runs_with_problems=stuck,
    )
    problems = [
        f"{name} {state}" for name, state in (("db", db), ("temporal", temporal)) if state != "ok"
    ]
    if temporal == "ok" and workers == 0:
        queue = request.app.state.settings.task_queue
        problems.append(f"no worker polls the task queue {queue!r}")
    failing = "; ".join(problems)
    body = {
        "code": 0 if healthy else 503,
        "msg": "success" if healthy else f"degraded: {failing}",
        "data": data.model_dump(),
    }
    return JSONResponse(body, status_code=200 if healthy else 503)
