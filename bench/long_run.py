"""The long run: one execution of 10,000 model and tool calls, watched throughout, against
a 10-call run of the same graph (issue 11: the cost of a call must not grow with the
run's length).

The graph loops ``turns`` times through: ``tick`` (an HTTP tool that answers which turn
it is), ``probe_all`` (an agent whose offline model asks for ``TOOL_CALLS`` tool calls,
then answers) and ``again`` (a condition that loops while the tick is below ``turns``):
10 calls a turn, two of them model calls. The tools are served by this process on
loopback. One WebSocket watcher is connected from the POST to the terminal event.

Figures: the wall time and calls per second of each run (POST to terminal event), the
Temporal runs of the chain (continue-as-new) with their history events, each run's own
rate of calls (first to last history event), and the worker's RSS before and after.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType as HistoryEventType

from bench import keel as k
from bench.platform import free_port, rss_bytes
from infra.logging import get_logger
from tests.support.graphs import counting_loop
from workflows.events import EventType

log = get_logger("keel.bench")

TOOL_CALLS = 7  # per agent visit: with two model calls and the tick, 10 calls a turn
CALLS_PER_TURN = TOOL_CALLS + 3
LONG_TIMEOUT_S = 3600.0


@dataclass
class ChainRun:
    """One Temporal run of the long execution's chain."""

    history_events: int
    activities: int
    seconds: float  # first to last history event

    @property
    def calls_per_s(self) -> float:
        return self.activities / self.seconds if self.seconds else 0.0


@dataclass
class Measured:
    calls: int
    seconds: float  # POST to the terminal event on the WebSocket
    events: int
    contiguous: bool
    completed: bool

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


@dataclass
class LongRunResult:
    turns: int
    short: list[Measured] = field(default_factory=list)
    long: Measured | None = None
    chain: list[ChainRun] = field(default_factory=list)
    rss_before: int = 0
    rss_after: int = 0

    @property
    def short_calls_per_s(self) -> float:
        return statistics.median(m.calls_per_s for m in self.short) if self.short else 0.0


async def _tick(request: Request) -> JSONResponse:
    """Which turn this is: the visit in the call's Idempotency-Key (execution/node/visit),
    so every execution counts from 1 and a retried call gives the same answer."""
    key = request.headers.get("idempotency-key", "")
    return JSONResponse({"n": int(key.rsplit("/", 1)[-1] or 0)})


async def _probe(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


class ToolService:
    """The two tools, served by this process on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        app = Starlette(
            routes=[
                Route("/tick", _tick, methods=["POST"]),
                Route("/probe", _probe, methods=["POST"]),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        self.task: asyncio.Task[None] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def __aenter__(self) -> ToolService:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(600):  # at most 30 s
            if self.server.started:
                return self
            await asyncio.sleep(0.05)
        raise RuntimeError("the bench's tool service did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


async def _tool(keel: k.Keel, name: str, url: str) -> int:
    body = {"name": name, "type": "http", "config": {"url": url, "method": "POST"}}
    return int(k.data(await keel.http.post("/api/v1/Tool/", json=body), 201)["id"])


async def _workflow(keel: k.Keel, tools: ToolService, turns: int) -> int:
    tick = await _tool(keel, f"bench-tick-{turns}", tools.url("tick"))
    probe = await _tool(keel, f"bench-probe-{turns}", tools.url("probe"))
    script = [
        {
            "tool_calls": [
                {"name": f"bench-probe-{turns}", "args": {"i": i}} for i in range(TOOL_CALLS)
            ]
        },
        {"reply": "done"},
    ]
    agent = await keel.agent(
        f"bench-prober-{turns}", tool_ids=[probe], metadata={"fake": {"script": script}}
    )
    return await keel.workflow(
        f"bench-long-{turns}", counting_loop(tick, agent, turns, agent_node="probe_all")
    )


async def _measure(
    keel: k.Keel, workflow_id: int, turns: int, limit_s: float
) -> tuple[Measured, k.Run]:
    sent = time.time()
    execution = await keel.create(workflow_id, start=True)
    run = k.Run(execution["id"], execution["temporal"]["workflow_id"], sent, time.time())
    async with asyncio.timeout(limit_s):
        await keel.watch(run.execution_id, run.events)
    ended = run.ended
    seqs = [e.seq for e in run.events]
    return Measured(
        calls=turns * CALLS_PER_TURN,
        seconds=(ended.at if ended else time.time()) - sent,
        events=len(run.events),
        contiguous=seqs == list(range(1, len(seqs) + 1)),
        completed=ended is not None and ended.type == EventType.EXECUTION_COMPLETED,
    ), run


def _ts(event: Any) -> float:
    return float(event.event_time.seconds) + event.event_time.nanos / 1e9


async def _chain(ctx: Any, temporal_id: str) -> list[ChainRun]:
    """Every Temporal run of one execution, oldest first, with its history."""
    found = [r async for r in ctx.client.list_workflows(f'WorkflowId = "{temporal_id}"')]
    runs = []
    for info in sorted(found, key=lambda r: r.start_time):
        history = await ctx.client.get_workflow_handle(info.id, run_id=info.run_id).fetch_history()
        events = history.events
        runs.append(
            ChainRun(
                history_events=len(events),
                activities=sum(
                    e.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                    for e in events
                ),
                seconds=_ts(events[-1]) - _ts(events[0]) if events else 0.0,
            )
        )
    return runs


async def long_run(ctx: Any) -> LongRunResult:
    """10 calls three times, then 10,000 (1,000 in quick mode) in one execution."""
    turns = 100 if ctx.plan.quick else 1000
    result = LongRunResult(turns=turns)
    worker_pid = ctx.platform.procs["worker"].pid
    async with ToolService() as tools:
        short_workflow = await _workflow(ctx.keel, tools, 1)
        long_workflow = await _workflow(ctx.keel, tools, turns)
        for _ in range(3):
            measured, _run = await _measure(ctx.keel, short_workflow, 1, 120)
            result.short.append(measured)
        result.rss_before = rss_bytes(worker_pid)
        log.info("long run started", calls=turns * CALLS_PER_TURN)
        result.long, run = await _measure(ctx.keel, long_workflow, turns, LONG_TIMEOUT_S)
        result.rss_after = rss_bytes(worker_pid)
    result.chain = await _chain(ctx, run.temporal_id)
    log.info(
        "long run done",
        calls=result.long.calls,
        seconds=round(result.long.seconds),
        temporal_runs=len(result.chain),
    )
    return result
