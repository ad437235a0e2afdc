"""The six measurements. Each returns plain data; ``bench/report.py`` renders it.

Every loop here is bounded twice: by a count of runs and by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import websockets
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from api.services.event_hub import POLL_COOLDOWN
from bench import keel as k
from bench import profiling
from bench.bare_worker import (
    CHAIN_LENGTH,
    DIAMOND_WIDTH,
    EVENTS_TOPIC,
    EXECUTION_STARTED,
    LAST_EVENT,
    NODE_COMPLETED,
)
from bench.platform import (
    BARE_TASK_QUEUE,
    STREAM_POLL_OPS,
    CpuMeter,
    Platform,
    Proc,
    diff,
    rss_bytes,
)
from bench.stats import pct
from infra.logging import get_logger
from workflows.events import EventType
from workflows.status import ExecutionStatus

log = get_logger("keel.bench")

SHAPES = {"chain": ("BareChain", CHAIN_LENGTH), "diamond": ("BareDiamond", DIAMOND_WIDTH)}
# The bare shapes that also stream a Keel run's events, followed as Keel's API does
# (the same pause between polls): bare Temporal doing the same extra work.
STREAMED = {"chain": "BareStreamedChain", "diamond": "BareStreamedDiamond"}
# "recorded": bare Temporal doing Keel's work (streaming, the ledger, the record, a REST
# front and a WebSocket per watcher; bench/bare_worker.py), with none of Keel's code.
SYSTEMS = ("keel", "bare", "streamed", "recorded")
CONCURRENCY = (1, 10, 50)


@dataclass(frozen=True)
class Plan:
    quick: bool
    repeats: int
    engine_runs: dict[int, int]
    warmup_runs: int
    event_runs: int
    paced_delay_s: float
    fanout_levels: tuple[int, ...]
    fanout_repeats: int
    api_seconds: float
    api_clients: int
    memory_levels: tuple[int, ...]
    profile_seconds: float
    capacity_levels: tuple[int, ...]

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                quick=True,
                repeats=1,
                engine_runs={1: 4, 10: 20, 50: 50},
                warmup_runs=2,
                event_runs=4,
                paced_delay_s=0.1,
                fanout_levels=(1, 100, 1000),
                fanout_repeats=1,
                api_seconds=2.0,
                api_clients=50,
                memory_levels=(1, 20, 100),
                profile_seconds=6.0,
                capacity_levels=(5, 20, 80),
            )
        return cls(
            quick=False,
            repeats=3,
            engine_runs={1: 8, 10: 30, 50: 50},
            warmup_runs=3,
            event_runs=12,
            paced_delay_s=0.1,
            fanout_levels=(1, 100, 1000),
            fanout_repeats=2,
            api_seconds=4.0,
            api_clients=50,
            memory_levels=(1, 100, 1000),
            profile_seconds=12.0,
            capacity_levels=(5, 10, 20, 40, 80, 160),
        )


@dataclass
class Context:
    platform: Platform
    keel: k.Keel
    client: Client
    plan: Plan
    deadline: float  # time.monotonic() after which optional repeats are skipped
    bare_http: httpx.AsyncClient  # to bench/bare_api.py, which fronts the recorded runs
    agents: dict[str, int] = field(default_factory=dict)
    workflows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def late(self) -> bool:
        return time.monotonic() > self.deadline


async def setup(ctx: Context) -> None:
    """The agents and published workflows every scenario uses."""
    ctx.agents["zero"] = await ctx.keel.agent("bench-zero")
    ctx.agents["paced"] = await ctx.keel.agent(
        "bench-paced", metadata={"fake": {"delay_s": ctx.plan.paced_delay_s}}
    )
    ctx.workflows["chain"] = await ctx.keel.workflow(
        "bench-chain", k.chain(ctx.agents["zero"], CHAIN_LENGTH)
    )
    ctx.workflows["diamond"] = await ctx.keel.workflow(
        "bench-diamond", k.diamond(ctx.agents["zero"], DIAMOND_WIDTH)
    )
    ctx.workflows["paced"] = await ctx.keel.workflow(
        "bench-paced-chain", k.chain(ctx.agents["paced"], CHAIN_LENGTH)
    )
    ctx.workflows["human"] = await ctx.keel.workflow("bench-human", k.human())


# -- 1 and 6: engine overhead and start latency ---------------------------------------------


@dataclass
class Batch:
    latencies: list[float]
    wall: float
    cpu: dict[str, float]  # CPU seconds by process over the batch
    foreign_share: float
    requests: dict[str, float]  # Temporal frontend requests over the batch, by operation
    runs: list[k.Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall if self.wall else math.nan


async def _batch(
    ctx: Context,
    one: Callable[[], Awaitable[float | k.Run]],
    total: int,
    concurrency: int,
    count_requests: bool = False,
) -> Batch:
    """``total`` runs, ``concurrency`` at a time. With ``count_requests``, the Temporal
    requests they made too (which waits for the dev server to publish its counters)."""
    latencies: list[float] = []
    runs: list[k.Run] = []
    failures: list[str] = []
    taken = 0

    async def worker() -> None:
        nonlocal taken
        while taken < total:
            taken += 1
            try:
                result = await one()
            except Exception as exc:  # a failed run is a finding: count it, go on
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                if len(failures) > max(3, total // 4):
                    raise
                continue
            if isinstance(result, k.Run):
                runs.append(result)
                assert result.ended is not None
                latencies.append(result.ended.at - result.sent)
            else:
                latencies.append(result)

    before = await ctx.platform.settled_requests() if count_requests else {}
    with CpuMeter(ctx.platform) as meter:
        started = time.monotonic()
        async with asyncio.timeout(max(120.0, total * 5.0)):
            await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.monotonic() - started
    after = await ctx.platform.settled_requests() if count_requests else {}
    return Batch(
        latencies, wall, meter.used, meter.foreign_share, diff(after, before), runs, failures
    )


def _bare(client: Client, shape: str, pace_s: float = 0.0) -> Callable[[], Awaitable[float]]:
    """The bare run of ``shape`` (its nodes taking ``pace_s`` each, a chain's only)."""
    name, arg = SHAPES[shape]

    async def one() -> float:
        sent = time.time()
        handle = await client.start_workflow(
            name,
            args=[arg, pace_s] if pace_s else [arg],
            id=f"bare-{uuid.uuid4().hex}",
            task_queue=BARE_TASK_QUEUE,
        )
        await handle.result()
        return time.time() - sent

    return one


async def _watch_streamed(
    client: Client,
    shape: str,
    workflow_id: str,
    pace_s: float = 0.0,
    received: list[k.Received] | None = None,
) -> None:
    """Start the streamed bare run of ``shape`` (its nodes taking ``pace_s`` each, a chain's
    only) and follow its stream to the last event; ``received`` gets each event as it
    arrives, with Keel's name for its kind where BARE_EVENT_TYPES has one."""
    await client.start_workflow(
        STREAMED[shape],
        args=[SHAPES[shape][1], pace_s] if pace_s else [SHAPES[shape][1]],
        id=workflow_id,
        task_queue=BARE_TASK_QUEUE,
    )
    async for item in WorkflowStreamClient.create(client, workflow_id).subscribe(
        EVENTS_TOPIC, result_type=dict, poll_cooldown=POLL_COOLDOWN
    ):
        if received is not None:
            at = time.time()
            kind = BARE_EVENT_TYPES.get(item.data["type"], item.data["type"])
            received.append(k.Received(kind, item.data["node_id"], item.offset + 1, at))
        if item.data["type"] == LAST_EVENT:
            return
    raise RuntimeError(f"{workflow_id}: the stream ended before {LAST_EVENT}")


def _streamed(
    client: Client, shape: str, pace_s: float = 0.0, ids: list[str] | None = None
) -> Callable[[], Awaitable[float]]:
    """The streamed bare run of ``shape``, timed until its last event has been read; its
    workflow id goes to ``ids``."""

    async def one() -> float:
        sent = time.time()
        workflow_id = f"streamed-{uuid.uuid4().hex}"
        if ids is not None:
            ids.append(workflow_id)
        await _watch_streamed(client, shape, workflow_id, pace_s)
        return time.time() - sent

    return one


def _recorded(
    ctx: Context, shape: str, ids: list[str] | None = None
) -> Callable[[], Awaitable[float]]:
    """The recorded bare run of ``shape``, started and watched through bench/bare_api.py
    as a Keel run is through Keel's API (``POST``, then its WebSocket until the last
    event); its Temporal id goes to ``ids``."""
    ws_base = ctx.platform.bare_api_url.replace("http://", "ws://")

    async def one() -> float:
        sent = time.time()
        response = await ctx.bare_http.post(
            f"/runs/{shape}", params={"workflow_id": ctx.workflows[shape]}
        )
        response.raise_for_status()
        temporal_id = response.json()["temporal_workflow_id"]
        if ids is not None:
            ids.append(temporal_id)
        async with websockets.connect(
            f"{ws_base}/runs/{temporal_id}/events", open_timeout=60, max_queue=None
        ) as ws:
            async for message in ws:
                if json.loads(message)["type"] == LAST_EVENT:
                    return time.time() - sent
        raise RuntimeError(f"{temporal_id}: the socket closed before {LAST_EVENT}")

    return one


def _keel(ctx: Context, shape: str) -> Callable[[], Awaitable[k.Run]]:
    workflow_id = ctx.workflows[shape]

    async def one() -> k.Run:
        return await ctx.keel.run(workflow_id)

    return one


@dataclass
class EngineResult:
    # (shape, system, concurrency) -> one Batch per repeat
    batches: dict[tuple[str, str, int], list[Batch]] = field(default_factory=dict)
    history: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    # The paced chain (every node takes plan.paced_delay_s), Keel, bare and streamed, at
    # concurrency 10: system -> one Batch per repeat, and the history of one run of each
    paced: dict[str, list[Batch]] = field(default_factory=dict)
    paced_history: dict[str, dict[str, int]] = field(default_factory=dict)
    # What asked for the workflow tasks of the chain runs at concurrency 10 (the batches
    # that counted Temporal's requests): ("chain" or "paced", system) -> per run, by cause
    tasks: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


async def engine(ctx: Context) -> EngineResult:
    result = EngineResult()
    plan = ctx.plan
    for shape in SHAPES:  # warm every path (imports, caches, connections) before measuring
        for _ in range(plan.warmup_runs):
            for _system, one in _systems(ctx, shape):
                await one()
    for repeat in range(plan.repeats):
        if repeat and ctx.late():
            ctx.notes.append(f"engine: stopped after {repeat} repeats (time budget)")
            break
        for concurrency in CONCURRENCY:
            for shape in SHAPES:
                # Keel and the bare ones back to back, so a noisy stretch hits all alike.
                ids: dict[str, list[str]] = {}
                for system, one in _systems(ctx, shape, ids):
                    counted = repeat == 0 and concurrency == 10
                    batch = await _batch(
                        ctx, one, plan.engine_runs[concurrency], concurrency, counted
                    )
                    result.batches.setdefault((shape, system, concurrency), []).append(batch)
                    if counted and shape == "chain" and system != "bare":
                        result.tasks[(shape, system)] = await _tasks(
                            ctx, system, batch, ids.get(system, [])
                        )
                    for failure in batch.failures:
                        ctx.notes.append(
                            f"engine {shape} {system} c={concurrency}: a run failed: {failure}"
                        )
                    log.info(
                        "engine batch",
                        repeat=repeat + 1,
                        shape=shape,
                        system=system,
                        concurrency=concurrency,
                        p50_ms=round(pct(batch.latencies, 50) * 1000, 1),
                        runs_per_s=round(batch.throughput, 1),
                    )
    # What one run of each asks of Temporal, from its history.
    for shape in SHAPES:
        run = result.batches[(shape, "keel", 1)][0].runs[-1]
        result.history[(shape, "keel")] = await k.history_shape(ctx.client, run.temporal_id)
        name, arg = SHAPES[shape]
        bare_id = f"bare-shape-{uuid.uuid4().hex}"
        await ctx.client.execute_workflow(name, arg, id=bare_id, task_queue=BARE_TASK_QUEUE)
        result.history[(shape, "bare")] = await k.history_shape(ctx.client, bare_id)
        # Followed as in the batches: a Keel run's history above had its watcher too.
        streamed_id = f"streamed-shape-{uuid.uuid4().hex}"
        await _watch_streamed(ctx.client, shape, streamed_id)
        await ctx.client.get_workflow_handle(streamed_id).result()  # its history complete
        result.history[(shape, "streamed")] = await k.history_shape(ctx.client, streamed_id)
        recorded_ids: list[str] = []
        await _recorded(ctx, shape, recorded_ids)()
        await ctx.client.get_workflow_handle(recorded_ids[0]).result()
        result.history[(shape, "recorded")] = await k.history_shape(ctx.client, recorded_ids[0])
    await _paced_engine(ctx, result)
    return result


async def _paced_engine(ctx: Context, result: EngineResult) -> None:
    """The chain again with every node taking time, as a real model call does: a watcher's
    polls then land while a node's activity runs, for Keel and bare streaming alike. What
    that costs bare Temporal is the floor for Keel's requests per run."""
    pace = ctx.plan.paced_delay_s
    streamed_ids: list[str] = []
    systems: dict[str, Callable[[], Awaitable[float | k.Run]]] = {
        "keel": _keel(ctx, "paced"),
        "bare": _bare(ctx.client, "chain", pace),
        "streamed": _streamed(ctx.client, "chain", pace, streamed_ids),
    }
    for repeat in range(ctx.plan.repeats):
        if repeat and ctx.late():
            ctx.notes.append(f"engine paced: stopped after {repeat} repeats (time budget)")
            break
        for system, one in systems.items():  # back to back, as in the batches above
            batch = await _batch(ctx, one, ctx.plan.engine_runs[10], 10, count_requests=True)
            result.paced.setdefault(system, []).append(batch)
            if repeat == 0 and system != "bare":
                result.tasks[("paced", system)] = await _tasks(ctx, system, batch, streamed_ids)
            log.info(
                "engine batch",
                repeat=repeat + 1,
                shape="paced chain",
                system=system,
                concurrency=10,
                p50_ms=round(pct(batch.latencies, 50) * 1000, 1),
                runs_per_s=round(batch.throughput, 1),
            )
    # The history of one run of each, alone, as for the other shapes.
    keel_run = await ctx.keel.run(ctx.workflows["paced"])
    result.paced_history["keel"] = await k.history_shape(ctx.client, keel_run.temporal_id)
    bare_id = f"bare-paced-{uuid.uuid4().hex}"
    await ctx.client.execute_workflow(
        SHAPES["chain"][0], args=[SHAPES["chain"][1], pace], id=bare_id, task_queue=BARE_TASK_QUEUE
    )
    result.paced_history["bare"] = await k.history_shape(ctx.client, bare_id)
    streamed_id = f"streamed-paced-{uuid.uuid4().hex}"
    await _watch_streamed(ctx.client, "chain", streamed_id, pace)
    await ctx.client.get_workflow_handle(streamed_id).result()
    result.paced_history["streamed"] = await k.history_shape(ctx.client, streamed_id)


def _systems(
    ctx: Context, shape: str, ids: dict[str, list[str]] | None = None
) -> list[tuple[str, Callable[[], Awaitable[float | k.Run]]]]:
    """Each system's run of ``shape``; the bare runs that stream put their workflow ids in
    ``ids[system]``."""
    ids = {} if ids is None else ids
    return [
        ("keel", _keel(ctx, shape)),
        ("bare", _bare(ctx.client, shape)),
        ("streamed", _streamed(ctx.client, shape, ids=ids.setdefault("streamed", []))),
        ("recorded", _recorded(ctx, shape, ids=ids.setdefault("recorded", []))),
    ]


async def _tasks(ctx: Context, system: str, batch: Batch, ids: list[str]) -> dict[str, float]:
    """What asked for the workflow tasks of a batch's runs, per run: Keel's runs, or the
    bare runs whose workflow ids ``ids`` collected."""
    ids = [run.temporal_id for run in batch.runs] if system == "keel" else ids
    return await k.tasks_per_run(ctx.client, ids)


# -- 2: event latency -------------------------------------------------------------------


# Where one event's latency goes: from its node's activity ending to the start of the
# workflow task that takes that ending, the task itself (which publishes the event and
# answers the waiting poll), and from the task's completion to the watcher.
EVENT_PARTS = ("to the task's start", "the task", "to the watcher")
# The bare streamed runs' event kinds that the samples need, as Keel names them.
BARE_EVENT_TYPES = {
    EXECUTION_STARTED: EventType.EXECUTION_STARTED,
    NODE_COMPLETED: EventType.NODE_COMPLETED,
}


@dataclass
class EventResult:
    # One list of samples (seconds) per repeat: Keel's watchers over the WebSocket, and
    # bare Temporal streaming the same events, read with the SDK's ``subscribe``.
    samples: list[list[float]] = field(default_factory=list)
    streamed: list[list[float]] = field(default_factory=list)
    excluded: int = 0
    # "keel" or "streamed" -> EVENT_PARTS -> samples (seconds), over every repeat
    parts: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {
            system: {part: [] for part in EVENT_PARTS} for system in ("keel", "streamed")
        }
    )


async def _event_samples(
    ctx: Context,
    temporal_id: str,
    receptions: list[list[k.Received]],
    parts: dict[str, list[float]] | None = None,
) -> tuple[list[float], int, list[float]]:
    """node.completed latencies (watcher receipt - ActivityTaskCompleted) for live events,
    the count of backlog events left out, and per node the time until every watcher had it.
    ``parts`` gets each sample split as EVENT_PARTS."""
    tasks = await k.node_tasks(ctx.client, temporal_id)
    samples: list[float] = []
    excluded = 0
    slowest: dict[str, float] = {}
    for events in receptions:
        started = next((e.at for e in events if e.type == EventType.EXECUTION_STARTED), math.inf)
        for e in events:
            if e.type != EventType.NODE_COMPLETED or e.node_id not in tasks:
                continue
            task = tasks[e.node_id]
            if task.finished < started:
                excluded += 1  # finished before this watcher was live: backlog, not latency
                continue
            samples.append(e.at - task.finished)
            slowest[e.node_id] = max(slowest.get(e.node_id, 0.0), e.at - task.finished)
            if parts is not None:
                for part, seconds in zip(
                    EVENT_PARTS,
                    (
                        task.task_started - task.finished,
                        task.task_completed - task.task_started,
                        e.at - task.task_completed,
                    ),
                    strict=True,
                ):
                    parts[part].append(seconds)
    return samples, excluded, list(slowest.values())


async def events(ctx: Context) -> EventResult:
    result = EventResult()
    for repeat in range(ctx.plan.repeats):
        if repeat and ctx.late():
            ctx.notes.append(f"events: stopped after {repeat} repeats (time budget)")
            break
        samples: list[float] = []
        streamed: list[float] = []
        for _ in range(ctx.plan.event_runs):
            run = await ctx.keel.run(ctx.workflows["paced"])
            got, excluded, _ = await _event_samples(
                ctx, run.temporal_id, [run.events], result.parts["keel"]
            )
            samples += got
            result.excluded += excluded
            # The same run, bare: the events read from the stream where they are made.
            received: list[k.Received] = []
            workflow_id = f"streamed-{uuid.uuid4().hex}"
            await _watch_streamed(
                ctx.client, "chain", workflow_id, ctx.plan.paced_delay_s, received
            )
            got, _, _ = await _event_samples(ctx, workflow_id, [received], result.parts["streamed"])
            streamed += got
        result.samples.append(samples)
        result.streamed.append(streamed)
        log.info(
            "events repeat",
            repeat=repeat + 1,
            samples=len(samples),
            p50_ms=round(pct(samples, 50) * 1000, 1),
            p99_ms=round(pct(samples, 99) * 1000, 1),
            streamed_p50_ms=round(pct(streamed, 50) * 1000, 1),
        )
    return result


# -- 3: fan-out ----------------------------------------------------------------------------


@dataclass
class FanoutLevel:
    watchers: int
    complete: int = 0  # watchers that received every event, in order
    events: int = 0  # events in the run
    samples: list[float] = field(default_factory=list)
    slowest: list[float] = field(default_factory=list)  # per event, until all had it
    polls: dict[str, float] = field(default_factory=dict)
    connect_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


async def _fanout_once(ctx: Context, watchers: int) -> FanoutLevel:
    level = FanoutLevel(watchers)
    execution = await ctx.keel.create(ctx.workflows["paced"], start=False)
    eid = execution["id"]
    receptions: list[list[k.Received]] = [[] for _ in range(watchers)]
    connect_gate = asyncio.Semaphore(100)
    connected = 0
    all_connected = asyncio.Event()

    async def watcher(into: list[k.Received]) -> None:
        nonlocal connected
        async with connect_gate:
            ws = await ctx.keel.connect(eid)
        connected += 1
        if connected == watchers:
            all_connected.set()
        async with ws:
            async for message in ws:
                at = time.time()
                item = json.loads(message)
                into.append(k.Received(item["type"], item.get("node_id"), item["seq"], at))
                if item["type"] in k.TERMINAL:
                    break

    began = time.monotonic()
    tasks = [asyncio.create_task(watcher(r)) for r in receptions]
    try:
        async with asyncio.timeout(180):
            await all_connected.wait()
            level.connect_s = time.monotonic() - began
            before = await ctx.platform.settled_requests()
            with CpuMeter(ctx.platform) as meter:
                started = await ctx.keel.start(eid)
                await asyncio.gather(*tasks)
            after = await ctx.platform.settled_requests()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    level.cpu = meter.used
    level.polls = {op: diff(after, before).get(op, 0.0) for op in STREAM_POLL_OPS}
    run = k.Run(eid, started["temporal"]["workflow_id"], 0.0, 0.0)
    level.events = max((e.seq for r in receptions for e in r), default=0)
    want = list(range(1, level.events + 1))
    level.complete = sum(
        1
        for r in receptions
        if [e.seq for e in r] == want and r and r[-1].type == EventType.EXECUTION_COMPLETED
    )
    level.samples, _, level.slowest = await _event_samples(ctx, run.temporal_id, receptions)
    return level


async def fanout(ctx: Context) -> list[list[FanoutLevel]]:
    """One list per watcher count, one FanoutLevel per repeat."""
    out: list[list[FanoutLevel]] = [[] for _ in ctx.plan.fanout_levels]
    for repeat in range(ctx.plan.fanout_repeats):
        if repeat and ctx.late():
            ctx.notes.append(f"fan-out: stopped after {repeat} repeats (time budget)")
            break
        for i, watchers in enumerate(ctx.plan.fanout_levels):
            level = await _fanout_once(ctx, watchers)
            out[i].append(level)
            log.info(
                "fan-out level",
                repeat=repeat + 1,
                watchers=watchers,
                complete=level.complete,
                p50_ms=round(pct(level.samples, 50) * 1000, 1),
                p99_ms=round(pct(level.samples, 99) * 1000, 1),
                polls=level.polls,
            )
    return out


# -- 4: API -------------------------------------------------------------------------------


@dataclass
class Hammer:
    ok: int
    errors: int
    elapsed: float
    latencies: list[float]
    loadgen_cpu: float  # share of one core the load generator used
    cpu: dict[str, float]

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else math.nan


class RawHttp:
    """A minimal HTTP/1.1 keep-alive GET client for the load loop. httpx costs this
    process several ms of CPU per request with 50 pooled connections, which on a small
    machine takes the CPU the server under test needs; this costs a few dozen us."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.request = (
            f"GET {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Accept: application/json\r\n{extra}\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.decode("latin-1").lower()
        if "transfer-encoding: chunked" in headers:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in headers.split("\r\n")
                    if line.startswith("content-length:")
                ),
                0,
            )
            await self.reader.readexactly(length)
        if "connection: close" in headers:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def hammer(ctx: Context, url: str, seconds: float, clients: int) -> Hammer:
    latencies: list[float] = []
    ok = errors = 0
    # The credential goes to the bare API too (which ignores it): the same request bytes.
    conns = [RawHttp(url, ctx.platform.auth_headers) for _ in range(clients)]
    try:
        # open the connections (and warm the route) first: the measured stretch is steady
        for status in await asyncio.gather(*[c.get() for c in conns]):
            if status != 200:
                raise RuntimeError(f"GET {url} -> {status}")
        stop_at = time.perf_counter() + seconds

        async def client(conn: RawHttp) -> None:
            nonlocal ok, errors
            for _ in range(1_000_000):
                if time.perf_counter() >= stop_at:
                    return
                sent = time.perf_counter()
                status = await conn.get()
                latencies.append(time.perf_counter() - sent)
                if status == 200:
                    ok += 1
                else:
                    errors += 1

        with CpuMeter(ctx.platform) as meter:
            started = time.perf_counter()
            async with asyncio.timeout(seconds + 60):
                await asyncio.gather(*[client(c) for c in conns])
            elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*[c.close() for c in conns])
    loadgen = meter.used.get("load generator", 0.0) / elapsed if elapsed else math.nan
    return Hammer(ok, errors, elapsed, latencies, loadgen, meter.used)


def api_targets(ctx: Context) -> dict[str, str]:
    agent = ctx.agents["zero"]
    page = "?page=1&page_size=20"
    return {
        "Keel GET /Agent/{id}": f"{ctx.platform.api_url}/api/v1/Agent/{agent}",
        "bare GET /agent/{id}": f"{ctx.platform.bare_api_url}/agent/{agent}",
        "Keel GET /Execution/ (page of 20)": f"{ctx.platform.api_url}/api/v1/Execution/{page}",
        "bare GET /executions (20 rows)": f"{ctx.platform.bare_api_url}/executions",
    }


async def api(ctx: Context) -> dict[str, list[Hammer]]:
    listed = k.data(await ctx.keel.http.get("/api/v1/Execution/", params={"page_size": 1}))
    for _ in range(max(0, 20 - int(listed["total"]))):  # a full page to list
        await ctx.keel.run(ctx.workflows["chain"])
    out: dict[str, list[Hammer]] = {name: [] for name in api_targets(ctx)}
    for repeat in range(ctx.plan.repeats):
        if repeat and ctx.late():
            ctx.notes.append(f"api: stopped after {repeat} repeats (time budget)")
            break
        for name, url in api_targets(ctx).items():
            result = await hammer(ctx, url, ctx.plan.api_seconds, ctx.plan.api_clients)
            out[name].append(result)
            log.info(
                "api endpoint",
                repeat=repeat + 1,
                endpoint=name,
                requests_per_s=round(result.rps),
                p99_ms=round(pct(result.latencies, 99) * 1000, 1),
                errors=result.errors,
                load_generator_cores=round(result.loadgen_cpu, 2),
            )
    return out


# -- capacity -----------------------------------------------------------------------------

START_LATENCY_LIMIT_S = 1.0


@dataclass
class CapacityLevel:
    concurrency: int
    runs: int
    throughput: float  # completed runs per second
    start_latencies: list[float]  # sent -> first workflow task started (s)
    failures: int


async def _first_task_started(client: Client, workflow_id: str) -> float:
    """When the server started the run's first workflow task (its wall clock)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            return k.event_time(event)
    return math.nan


async def _capacity_level(ctx: Context, system: str, concurrency: int) -> CapacityLevel:
    """``concurrency`` chain runs in flight, closed loop, 3 runs per slot (at least 15)."""
    started: list[tuple[str, float]] = []  # (Temporal workflow id, sent)
    name, arg = SHAPES["chain"]

    async def one() -> float:
        sent = time.time()
        if system == "keel":
            run = await ctx.keel.run(ctx.workflows["chain"])
            started.append((run.temporal_id, sent))
        else:
            workflow_id = f"bare-cap-{uuid.uuid4().hex}"
            handle = await ctx.client.start_workflow(
                name, arg, id=workflow_id, task_queue=BARE_TASK_QUEUE
            )
            started.append((workflow_id, sent))
            await handle.result()
        return time.time() - sent

    batch = await _batch(ctx, one, max(15, 3 * concurrency), concurrency)
    gate = asyncio.Semaphore(20)

    async def latency(workflow_id: str, sent: float) -> float:
        async with gate:
            return await _first_task_started(ctx.client, workflow_id) - sent

    latencies = await asyncio.gather(*[latency(w, t) for w, t in started])
    return CapacityLevel(
        concurrency,
        len(batch.latencies),
        batch.throughput,
        [v for v in latencies if not math.isnan(v)],
        len(batch.failures),
    )


async def capacity(ctx: Context) -> dict[str, list[CapacityLevel]]:
    """For Keel and bare: chain runs at rising concurrency until p95 start latency (request
    sent to first workflow task started) passes 1 s, or the levels or time run out."""
    out: dict[str, list[CapacityLevel]] = {"keel": [], "bare": []}
    for system in out:
        for concurrency in ctx.plan.capacity_levels:
            if ctx.late():
                ctx.notes.append(f"capacity {system}: stopped before c={concurrency} (time budget)")
                break
            level = await _capacity_level(ctx, system, concurrency)
            out[system].append(level)
            p95 = pct(level.start_latencies, 95)
            log.info(
                "capacity level",
                system=system,
                concurrency=concurrency,
                start_p95_ms=round(p95 * 1000, 1),
                runs_per_s=round(level.throughput, 1),
            )
            if p95 >= START_LATENCY_LIMIT_S:
                break
    return out


# -- profiles ----------------------------------------------------------------------------


@dataclass
class ProfilePhase:
    what: str
    profiles: dict[str, profiling.Profile]
    done: int  # runs or requests completed under the profiler
    unit: str
    seconds: float
    cpu: dict[str, float]


async def _profile_runs(ctx: Context, seconds: float) -> ProfilePhase:
    pids = {name: ctx.platform.procs[name].pid for name in ("api", "worker")}
    recording = asyncio.create_task(profiling.record(pids, seconds, ctx.platform.data_dir, "runs"))
    runs = 0
    one = _keel(ctx, "chain")

    async def worker() -> None:
        nonlocal runs
        for _ in range(10_000):
            if recording.done():
                return
            await one()
            runs += 1

    with CpuMeter(ctx.platform) as meter:
        async with asyncio.timeout(seconds + 120):
            await asyncio.gather(*[worker() for _ in range(10)])
            profiles = await recording
    return ProfilePhase(
        "Keel chain runs at concurrency 10", profiles, runs, "runs", meter.elapsed, meter.used
    )


async def _profile_get(ctx: Context, seconds: float, name: str) -> ProfilePhase:
    pids = {"api": ctx.platform.procs["api"].pid}
    recording = asyncio.create_task(
        profiling.record(pids, seconds, ctx.platform.data_dir, name.split()[1].strip("/"))
    )
    result = await hammer(ctx, api_targets(ctx)[name], seconds, ctx.plan.api_clients)
    profiles = await recording
    return ProfilePhase(
        f"{name} at {ctx.plan.api_clients} concurrent clients",
        profiles,
        result.ok,
        "requests",
        result.elapsed,
        result.cpu,
    )


async def profile(ctx: Context) -> list[ProfilePhase]:
    """py-spy on the API and worker during Keel runs, and on the API during GETs."""
    seconds = ctx.plan.profile_seconds
    for _ in range(ctx.plan.warmup_runs):  # the worker may be fresh (after memory)
        await _keel(ctx, "chain")()
    phases = [await _profile_runs(ctx, seconds)]
    for name in ("Keel GET /Agent/{id}", "Keel GET /Execution/ (page of 20)"):
        phases.append(await _profile_get(ctx, seconds / 2, name))
    return phases


# -- 5: worker memory --------------------------------------------------------------------


@dataclass
class MemoryResult:
    idle_rss: int = 0
    rss: dict[int, int] = field(default_factory=dict)  # waiting executions -> RSS bytes
    api_rss: dict[int, int] = field(default_factory=dict)  # the same, of the API process
    api_idle_rss: int = 0
    waiting_check: dict[int, int] = field(default_factory=dict)
    start_all_s: float = math.nan  # starting the largest level, until all were waiting
    approve_all_s: float = math.nan  # approving every waiting execution, until all completed
    approved: int = 0


async def _waiting(ctx: Context) -> int:
    response = await ctx.keel.http.get(
        "/api/v1/Execution/", params={"status": ExecutionStatus.WAITING, "page_size": 1}
    )
    return int(k.data(response)["total"])


async def _settled_rss(pid: int) -> int:
    """RSS once it stops moving (two reads 0.5 s apart within 1%), at most 10 s."""
    last = rss_bytes(pid)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_bytes(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


async def _started(worker: Proc) -> None:
    """Until a ``keel worker`` process says it polls (its log line), at most 90 s."""
    async with asyncio.timeout(90):
        for _ in range(900):
            if "worker started" in worker.output():
                return
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited: {worker.output()[-2000:]}")
            await asyncio.sleep(0.1)


async def _approve_all(ctx: Context, execution_ids: list[int]) -> tuple[float, int]:
    """Approve every waiting execution (20 requests at a time); seconds until all report
    completed, and how many did."""
    gate = asyncio.Semaphore(20)
    began = time.monotonic()

    async def approve(execution_id: int) -> None:
        async with gate:
            k.data(
                await ctx.keel.http.post(
                    f"/api/v1/Execution/{execution_id}/signal",
                    json={"node_id": "approve", "action": "approve"},
                )
            )

    async with asyncio.timeout(600):
        await asyncio.gather(*[approve(e) for e in execution_ids])
        completed = 0
        for _ in range(1200):
            response = await ctx.keel.http.get(
                "/api/v1/Execution/",
                params={
                    "status": ExecutionStatus.COMPLETED,
                    "workflow_id": ctx.workflows["human"],
                    "page_size": 1,
                },
            )
            completed = int(k.data(response)["total"])
            if completed >= len(execution_ids):
                break
            await asyncio.sleep(0.2)
    return time.monotonic() - began, completed


async def memory(ctx: Context) -> MemoryResult:
    """A fresh ``keel worker`` process alone on the task queue; executions park on a
    human node; its RSS at each level."""
    result = MemoryResult()
    platform = ctx.platform
    await asyncio.to_thread(platform.procs["worker"].stop)
    worker = platform.start_keel_worker("memory_worker")
    await _started(worker)
    result.idle_rss = await _settled_rss(worker.pid)
    api_pid = platform.procs["api"].pid
    result.api_idle_rss = rss_bytes(api_pid)
    started = 0
    gate = asyncio.Semaphore(10)
    execution_ids: list[int] = []

    async def start_one() -> None:
        async with gate:
            execution_ids.append((await ctx.keel.create(ctx.workflows["human"], start=True))["id"])

    for level in ctx.plan.memory_levels:
        began = time.monotonic()
        await asyncio.gather(*[start_one() for _ in range(level - started)])
        started = level
        waiting = 0
        async with asyncio.timeout(300):
            for _ in range(600):
                waiting = await _waiting(ctx)
                if waiting >= level:
                    break
                await asyncio.sleep(0.5)
        result.waiting_check[level] = waiting
        result.start_all_s = time.monotonic() - began
        result.rss[level] = await _settled_rss(worker.pid)
        result.api_rss[level] = rss_bytes(api_pid)
        log.info("memory level", waiting=level, worker_rss_mib=round(result.rss[level] / 2**20, 1))
    result.approve_all_s, result.approved = await _approve_all(ctx, execution_ids)
    log.info("memory approved", approved=result.approved, seconds=round(result.approve_all_s, 1))
    # Put the usual worker back for what runs after this.
    await asyncio.to_thread(worker.stop)
    await _started(platform.start_keel_worker())
    return result
