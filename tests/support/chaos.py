"""The chaos run (issue 13, point 7): a bounded load of executions on the embedded
platform (``keel up`` as a child process) while its worker is SIGKILLed at random
every few seconds and the Temporal dev server, MariaDB and the API are each
restarted once. Then it checks what survived and writes the table of
docs/reliability.md.

    python -m tests.support.chaos [--runs 200] [--kill-every 8] [--database mariadb]
    make chaos CHAOS_ARGS="--runs 50"

The load mixes five shapes: a chain of agents, a parallel fan-out and join, a tool
node feeding a condition, a human approval (approved through the API when its
watcher sees it waiting), and an agent that calls an HTTP tool. Every agent streams
from a fake OpenAI-compatible server on loopback that logs each call it answered;
the tool is a loopback HTTP service. Every run is watched over WebSocket from its
start to its end, reconnecting with ``after=<last seq>``.

tests/scale/test_chaos.py runs a short version of this inside the test-suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from infra.db import create_engine
from infra.models import Execution, ExecutionEvent, UsageRecord
from tests.support.fake_http import HttpToolService
from tests.support.fake_llm import Turn
from tests.support.fleet import CountingOpenAI, Watcher, polled_by, poller_identities
from tests.support.net import free_port
from tests.support.waiting import wait_for
from workflows.events import EventType
from workflows.status import FINISHED, ExecutionStatus

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ("chain", "join", "condition", "approval", "tool_agent")
MARKER = re.compile(r"run-(\d+)/([a-z_]+)")
ANSWER = "a short answer streamed word by word"


@dataclass
class Plan:
    """How big the run is and what it breaks."""

    runs: int = 200
    # Mean time a worker serves (polls) before it is SIGKILLed (uniform in 0.5x-1.5x).
    kill_every_s: float = 10.0
    start_over_s: float | None = None  # the starts are spread over this; default 0.3 s a run
    database: str = "mariadb"  # or "sqlite" (then no database restart)
    restart_temporal: bool = True
    restart_database: bool = True
    restart_api: bool = True
    deadline_s: float = 1500.0  # for the whole load, starts to last event
    seed: int | None = None

    @property
    def load_s(self) -> float:
        return self.start_over_s if self.start_over_s is not None else max(20.0, 0.3 * self.runs)


# -- the edges: a model server that calls the tool when offered one -------------------------


@dataclass
class ChaosOpenAI(CountingOpenAI):
    """Answers every call with a streamed sentence; an agent offered tools is first asked
    to call one. Each answered call is logged with its time (``answered_at``)."""

    answered_at: list[float] = field(default_factory=list)

    def turn_for(self, body: dict[str, Any]) -> Turn:
        self.answered_at.append(time.time())
        tools = body.get("tools") or []
        if tools and not any(m.get("role") == "tool" for m in body.get("messages", [])):
            return Turn(tool_calls=[{"name": tools[0]["function"]["name"], "args": {"q": "tides"}}])
        return Turn(content=ANSWER)


# -- MariaDB, private to the run ------------------------------------------------------------


@dataclass
class MariaDB:
    """A private MariaDB on loopback, started with .ci/mariadb.sh in its own directory."""

    base: Path
    port: int
    url: str = ""

    async def start(self) -> None:
        env = {
            **os.environ,
            "KEEL_MARIADB_DIR": str(self.base),
            "KEEL_MARIADB_PORT": str(self.port),
        }
        process = await asyncio.create_subprocess_exec(
            "bash",
            str(ROOT / ".ci" / "mariadb.sh"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"MariaDB did not start: {err.decode()[-2000:]}")
        self.url = out.decode().strip()

    @property
    def pid(self) -> int | None:
        try:
            return int((self.base / "mysqld.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    async def kill(self) -> None:
        """SIGKILL the server and wait until it is gone."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: _gone(pid), timeout=30, what=f"mariadbd {pid} to exit")

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            await wait_for(lambda: _gone(pid), timeout=60, what=f"mariadbd {pid} to stop")
        except AssertionError:
            await self.kill()


async def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# -- keel up ----------------------------------------------------------------------------------


@dataclass
class KeelUp:
    """``keel up`` as a child process, and SIGKILL for the children it supervises."""

    workdir: Path
    database_url: str
    api_port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    api_key: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
            "KEEL_ENVIRONMENT": "test",
            "KEEL_DATA_DIR": str(self.data_dir),
            "KEEL_DATABASE_URL": self.database_url,
            "KEEL_API_PORT": str(self.api_port),
            "KEEL_TEMPORAL_PORT": str(self.temporal_port),
            "KEEL_TEMPORAL_UI_PORT": str(free_port()),
            "KEEL_SECRET_KEY": "chaos-secret-key-that-is-long-enough-0123456789",
            "KEEL_TOOLS_ALLOW_PRIVATE": "true",
            "KEEL_WORKER_SHUTDOWN_GRACE_S": "5",
            "KEEL_LOG_LEVEL": "WARNING",
        }

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "keel-up.log").open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keel",
                "up",
                env=self.env(),
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        await self.wait_healthy(timeout=180)
        credentials = (self.data_dir / "credentials").read_text()
        self.api_key = next(
            line.split("=", 1)[1]
            for line in credentials.splitlines()
            if line.startswith("KEEL_API_KEY=")
        )

    async def wait_healthy(self, timeout: float) -> None:
        async with httpx.AsyncClient(timeout=5) as http:

            async def healthy() -> bool:
                if not self.alive:
                    raise AssertionError(f"keel up exited; see {self.workdir / 'keel-up.log'}")
                try:
                    return (await http.get(f"{self.base_url}/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(healthy, timeout=timeout, interval=0.2, what="keel up to be healthy")

    def child(self, name: str) -> int | None:
        """The pid of the supervised child ``worker``, ``api`` or ``temporal``, if running."""
        if self.process is None:
            return None
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for child in map(int, children):
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if name == "temporal" and b"start-dev" in argv:
                return child
            if name in ("worker", "api") and argv[-2:] in (
                [b"keel", name.encode()],
                [name.encode(), b""],
            ):
                return child
        return None

    async def serving_worker(self, temporal: TemporalClient) -> int | None:
        """The worker's pid once it polls the task queue (its identity is pid@host)."""
        pid = self.child("worker")
        if pid is None:
            return None
        try:
            async with asyncio.timeout(10):
                identities = await poller_identities(temporal, "keel")
        except (RPCError, TimeoutError):
            return None
        return pid if polled_by(identities, pid) else None

    async def kill_child(self, name: str, timeout: float = 30) -> bool:
        """SIGKILL the child (waiting for one to be running): keel up restarts it."""

        async def running() -> int | None:
            return self.child(name)

        try:
            pid = await wait_for(running, timeout=timeout, interval=0.1, what=f"keel up's {name}")
        except AssertionError:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    async def stop(self) -> None:
        """SIGTERM: keel up stops the API, the worker and Temporal, in that order."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(90):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# -- a client that rides through restarts -------------------------------------------------------


class Unanswered(Exception):
    pass


class ChaosClient:
    """Requests to keel up's API, retried while it (or what it needs) is restarting."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
        self.retries = 0
        self.throttled = 0

    async def call(
        self,
        method: str,
        path: str,
        accept: tuple[int, ...] = (200, 201),
        timeout: float = 180,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The envelope's data once the API answers with a status in ``accept``; connection
        failures and 5xx answers are retried (with what the caller knows about repeats)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                response = await self.http.request(method, path, **kwargs)
                if response.status_code in accept:
                    return dict(response.json().get("data") or {})
                if response.status_code == 429:  # throttled, or the running cap: wait as told
                    self.throttled += 1
                    await asyncio.sleep(float(response.headers.get("retry-after") or 1))
                    continue
                if response.status_code < 500:
                    raise Unanswered(f"{method} {path}: {response.status_code} {response.text}")
                last = f"{response.status_code} {response.json().get('msg')}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            self.retries += 1
            await asyncio.sleep(0.5)
        raise Unanswered(f"{method} {path}: no answer in {timeout}s ({last})")

    async def close(self) -> None:
        await self.http.aclose()


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Run:
    index: int
    shape: str
    execution_id: int = 0
    created_at: float = 0.0
    watcher: Watcher | None = None
    approved: bool = False
    problem: str = ""  # the harness could not create, start, approve or follow it


@dataclass
class Disruption:
    what: str
    at_s: float


@dataclass
class Report:
    plan: Plan
    runs: list[Run]
    disruptions: list[Disruption]
    statuses: Counter[str]
    errors: dict[int, str]  # execution id -> error of a failed run
    stuck: list[int]
    lost: dict[int, int]  # execution id -> events stored but never received
    duplicated: dict[int, int]
    llm_answered: int
    ledger_llm_rows: int
    ledger_over: dict[str, int]  # "execution/node" -> rows beyond the calls answered
    unrecorded_killed: int  # answered calls a killed worker never recorded
    unrecorded_unexplained: dict[str, int]
    disagreeing: list[str]
    orphans: int  # execution rows no run of the load owns
    longest_stall_s: float
    longest_stall_run: int
    elapsed_s: float
    reconnects: int
    client_retries: int
    client_throttled: int

    @property
    def passed(self) -> bool:
        return self.statuses.get(ExecutionStatus.COMPLETED, 0) == len(self.runs) and not (
            self.stuck
            or self.lost
            or self.duplicated
            or self.ledger_over
            or self.unrecorded_unexplained
            or self.disagreeing
            or self.orphans
        )

    def markdown(self, command: str) -> str:
        completed = self.statuses.get(ExecutionStatus.COMPLETED, 0)
        failed = sum(
            n for s, n in self.statuses.items() if s != ExecutionStatus.COMPLETED and s in FINISHED
        )
        kills = sum(1 for d in self.disruptions if d.what == "worker SIGKILL")
        others = ", ".join(
            f"{d.what} at {d.at_s:.0f}s" for d in self.disruptions if d.what != "worker SIGKILL"
        )
        rows = [
            ("runs started", f"{len(self.runs)} ({', '.join(SHAPES)}, in turn)"),
            ("runs completed", str(completed)),
            ("runs failed", str(failed)),
            ("runs stuck (not finished at the deadline)", str(len(self.stuck))),
            (
                "events lost (stored, never received by the run's watcher)",
                f"{sum(self.lost.values())} in {len(self.lost)} watchers",
            ),
            (
                "events duplicated (received twice by a watcher)",
                f"{sum(self.duplicated.values())} in {len(self.duplicated)} watchers",
            ),
            ("model calls answered (fake server's log)", str(self.llm_answered)),
            ("ledger rows for model calls", str(self.ledger_llm_rows)),
            ("ledger rows beyond the calls answered", str(sum(self.ledger_over.values()))),
            (
                "answered calls unrecorded: the worker was SIGKILLed before the commit",
                str(self.unrecorded_killed),
            ),
            ("answered calls unrecorded otherwise", str(sum(self.unrecorded_unexplained.values()))),
            ("execution rows disagreeing with Temporal", str(len(self.disagreeing))),
            (
                "execution rows no run owns (a create retried after a lost answer)",
                str(self.orphans),
            ),
            (
                "longest time a run made no progress",
                f"{self.longest_stall_s:.1f} s (execution {self.longest_stall_run})",
            ),
            ("worker SIGKILLs", str(kills)),
            ("other disruptions", others or "none"),
            (
                "watcher reconnects / client retries / waits on a 429",
                f"{self.reconnects} / {self.client_retries} / {self.client_throttled}",
            ),
            ("wall time", f"{self.elapsed_s:.0f} s"),
        ]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        details = []
        if self.errors:
            details.append(
                "Failed runs: "
                + "; ".join(f"{i}: {e}" for i, e in sorted(self.errors.items())[:10])
            )
        if self.disagreeing:
            details.append("Disagreeing: " + "; ".join(self.disagreeing[:10]))
        if self.unrecorded_unexplained:
            details.append(f"Unrecorded, unexplained: {self.unrecorded_unexplained}")
        if self.ledger_over:
            details.append(f"Ledger beyond answered: {self.ledger_over}")
        problems = [f"run {r.index}: {r.problem}" for r in self.runs if r.problem]
        if problems:
            details.append("Harness problems: " + "; ".join(problems[:10]))
        return (
            f"Command: `{command}`  \n"
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; database: {self.plan.database}; "
            f"each worker SIGKILLed after polling for {self.plan.kill_every_s:g} s on average; "
            f"starts spread over {self.plan.load_s:.0f} s. "
            f"Result: **{'pass' if self.passed else 'FAIL'}**.\n\n"
            "| check | result |\n|---|---|\n"
            + table
            + "\n"
            + ("".join(f"\n{line}\n" for line in details))
        )


async def _publish(client: ChaosClient, name: str, definition: dict[str, Any]) -> int:
    made = await client.call(
        "POST", "/api/v1/Workflow/", json={"name": name, "definition": definition}
    )
    await client.call("POST", f"/api/v1/Workflow/{made['id']}/publish")
    return int(made["id"])


def _agent_node(node_id: str, agent: int) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "agent",
        "agent_id": agent,
        "input": "{{ input.topic }}/" + node_id,
    }


def _edges(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in pairs]


async def _workflows(
    client: ChaosClient, llm: ChaosOpenAI, tools: HttpToolService
) -> dict[str, int]:
    """One published workflow per shape."""
    tool = (
        await client.call(
            "POST",
            "/api/v1/Tool/",
            json={
                "name": "lookup",
                "type": "http",
                "config": {"url": tools.url("lookup"), "method": "POST"},
            },
        )
    )["id"]

    async def agent(name: str, **extra: Any) -> int:
        made = await client.call(
            "POST",
            "/api/v1/Agent/",
            json={
                "name": name,
                "provider": "openai",
                "model": "gpt-4o-mini",
                "base_url": llm.base_url,
                "api_key": "sk-chaos-test",
                **extra,
            },
        )
        return int(made["id"])

    writer = await agent("writer")
    researcher = await agent("researcher", tool_ids=[tool])
    a = writer  # short, for the node lists below
    return {
        "chain": await _publish(
            client,
            "chain",
            {
                "nodes": [_agent_node(n, a) for n in ("outline", "draft", "polish")],
                "edges": _edges(
                    ("START", "outline"),
                    ("outline", "draft"),
                    ("draft", "polish"),
                    ("polish", "END"),
                ),
            },
        ),
        "join": await _publish(
            client,
            "join",
            {
                "nodes": [_agent_node(n, a) for n in ("plan", "left", "right", "merge")],
                "edges": _edges(
                    ("START", "plan"),
                    ("plan", "left"),
                    ("plan", "right"),
                    ("left", "merge"),
                    ("right", "merge"),
                    ("merge", "END"),
                ),
            },
        ),
        "condition": await _publish(
            client,
            "condition",
            {
                "nodes": [
                    {
                        "id": "lookup",
                        "type": "tool",
                        "tool_id": tool,
                        "arguments": {"q": "{{ input.topic }}"},
                    },
                    {
                        "id": "check",
                        "type": "condition",
                        "routes": [
                            {
                                "when": {
                                    "path": "nodes.lookup.output.status",
                                    "op": "eq",
                                    "value": 200,
                                },
                                "to": "summarize",
                            }
                        ],
                        "default": "END",
                    },
                    _agent_node("summarize", a),
                ],
                "edges": _edges(("START", "lookup"), ("lookup", "check"), ("summarize", "END")),
            },
        ),
        "approval": await _publish(
            client,
            "approval",
            {
                "nodes": [
                    _agent_node("draft", a),
                    {"id": "approve", "type": "human", "prompt": "ship it?"},
                    _agent_node("final", a),
                ],
                "edges": _edges(
                    ("START", "draft"), ("draft", "approve"), ("approve", "final"), ("final", "END")
                ),
            },
        ),
        "tool_agent": await _publish(
            client,
            "tool_agent",
            {
                "nodes": [_agent_node("research", researcher)],
                "edges": _edges(("START", "research"), ("research", "END")),
            },
        ),
    }


class Chaos:
    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.random = random.Random(plan.seed)
        self.disruptions: list[Disruption] = []
        self.kill_times: list[float] = []
        self.began = 0.0
        self.load_done = asyncio.Event()

    def _note(self, what: str) -> None:
        self.disruptions.append(Disruption(what, time.monotonic() - self.began))

    async def run(self) -> Report:
        self.workdir.mkdir(parents=True, exist_ok=True)
        database: MariaDB | None = None
        if self.plan.database == "mariadb":
            # mariadbd runs as the mysql user when we are root: a directory it can reach.
            base = Path(tempfile.mkdtemp(prefix="keel-chaos-mariadb-"))
            database = MariaDB(base, free_port())
            await database.start()
            url = database.url
        else:
            url = f"sqlite+aiosqlite:///{self.workdir / 'data' / 'keel.db'}"
        platform = KeelUp(self.workdir, url)
        try:
            llm = ChaosOpenAI()
            async with llm, HttpToolService() as tools:
                await platform.start()
                return await self._load(platform, database, llm, tools, url)
        finally:
            await platform.stop()
            if database is not None:
                await database.stop()
                shutil.rmtree(database.base, ignore_errors=True)

    async def _load(
        self,
        platform: KeelUp,
        database: MariaDB | None,
        llm: ChaosOpenAI,
        tools: HttpToolService,
        url: str,
    ) -> Report:
        headers = {"Authorization": f"Bearer {platform.api_key}"}
        client = ChaosClient(platform.base_url, headers)
        workflows = await _workflows(client, llm, tools)
        runs = [Run(i, SHAPES[i % len(SHAPES)]) for i in range(self.plan.runs)]
        self.began = time.monotonic()
        deadline = self.began + self.plan.deadline_s
        following = [
            asyncio.create_task(self._one(run, i, client, platform, headers, workflows, deadline))
            for i, run in enumerate(runs)
        ]
        temporal = await TemporalClient.connect(platform.temporal_address)
        chaos = [
            asyncio.create_task(self._kill_workers(platform, temporal)),
            asyncio.create_task(self._restarts(platform, database)),
            asyncio.create_task(self._approve(runs, client)),
        ]
        try:
            await asyncio.gather(*following)
        finally:
            self.load_done.set()
            for task in chaos:
                task.cancel()
            for task in chaos:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        elapsed = time.monotonic() - self.began
        await platform.wait_healthy(timeout=120)  # the record settles; Temporal answers
        report = await self._check(runs, platform, llm, url, client, elapsed)
        await client.close()
        return report

    async def _one(
        self,
        run: Run,
        i: int,
        client: ChaosClient,
        platform: KeelUp,
        headers: dict[str, str],
        workflows: dict[str, int],
        deadline: float,
    ) -> None:
        """Create, start and follow one run, at its place in the spread of starts."""
        await asyncio.sleep(self.plan.load_s * i / max(1, self.plan.runs))
        try:
            made = await client.call(
                "POST",
                "/api/v1/Execution/",
                json={"workflow_id": workflows[run.shape], "input": {"topic": f"run-{i}"}},
            )
            run.execution_id = int(made["id"])
            run.created_at = time.time()
            # 409: an earlier attempt started it and its answer was lost.
            # 429 while the workspace is at its cap of running executions: the run stays
            # pending and the client starts it once one has finished.
            await client.call(
                "POST",
                f"/api/v1/Execution/{run.execution_id}/start",
                accept=(200, 409),
                timeout=max(1.0, deadline - time.monotonic()),
            )
            run.watcher = Watcher(run.execution_id, [platform], headers)
            await run.watcher.follow(max(1.0, deadline - time.monotonic()))
        except (Unanswered, TimeoutError) as exc:
            run.problem = f"{type(exc).__name__}: {exc}"

    async def _kill_workers(self, platform: KeelUp, temporal: TemporalClient) -> None:
        """Until the load is done: once the worker polls, let it serve for a random few
        seconds, then SIGKILL it (keel up starts another)."""
        while not self.load_done.is_set():

            async def serving() -> int | None:
                return await platform.serving_worker(temporal)

            try:
                pid = await wait_for(serving, timeout=120, interval=0.2, what="a serving worker")
            except AssertionError:
                continue  # Temporal restarting, say: look again
            await asyncio.sleep(self.plan.kill_every_s * self.random.uniform(0.5, 1.5))
            if platform.child("worker") == pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.kill_times.append(time.time())
                self._note("worker SIGKILL")

    async def _restarts(self, platform: KeelUp, database: MariaDB | None) -> None:
        """Temporal, the database and the API, once each, spread over the starts."""
        load = self.plan.load_s
        steps: list[tuple[float, str]] = []
        if self.plan.restart_temporal:
            steps.append((0.25 * load, "temporal"))
        if self.plan.restart_database and database is not None:
            steps.append((0.5 * load, "mariadb"))
        if self.plan.restart_api:
            steps.append((0.75 * load, "api"))
        for at, what in steps:
            await asyncio.sleep(max(0.0, self.began + at - time.monotonic()))
            if what == "mariadb" and database is not None:
                self._note("MariaDB SIGKILL + restart")
                await database.restart()
            elif await platform.kill_child(what):
                self._note(f"{what} SIGKILL (keel up restarts it)")

    async def _approve(self, runs: list[Run], client: ChaosClient) -> None:
        """Approve each approval run once its watcher saw it waiting."""
        while True:
            for run in runs:
                if (
                    run.shape != "approval"
                    or run.approved
                    or run.watcher is None
                    or not any(e["type"] == EventType.HUMAN_WAITING for e in run.watcher.events)
                ):
                    continue
                try:
                    # 409: not waiting any more, an earlier attempt got through.
                    await client.call(
                        "POST",
                        f"/api/v1/Execution/{run.execution_id}/signal",
                        accept=(200, 409),
                        json={"node_id": "approve", "action": "approve"},
                    )
                    run.approved = True
                except Unanswered as exc:
                    run.problem = f"approval: {exc}"
                    run.approved = True
            await asyncio.sleep(0.2)

    # -- the checks ------------------------------------------------------------------------

    async def _check(
        self,
        runs: list[Run],
        platform: KeelUp,
        llm: ChaosOpenAI,
        url: str,
        client: ChaosClient,
        elapsed: float,
    ) -> Report:
        engine = create_engine(url)
        ids = {run.execution_id for run in runs if run.execution_id}

        async def rows_finished() -> bool:
            async with engine.connect() as conn:
                open_runs = await conn.scalar(
                    select(func.count())
                    .select_from(Execution)
                    .where(
                        Execution.id.in_(ids), Execution.status.not_in([str(s) for s in FINISHED])
                    )
                )
            return open_runs == 0

        with contextlib.suppress(AssertionError):  # what is still open is stuck
            await wait_for(
                rows_finished, timeout=60, interval=0.5, what="every run's record to be finished"
            )
        async with engine.connect() as conn:
            rows = {row.id: row for row in (await conn.execute(select(Execution))).all()}
            stored = dict(
                (
                    await conn.execute(
                        select(ExecutionEvent.execution_id, func.max(ExecutionEvent.seq)).group_by(
                            ExecutionEvent.execution_id
                        )
                    )
                ).all()
            )
            ledger: dict[tuple[int, str], int] = {
                (int(e or 0), str(n)): c
                for e, n, c in (
                    await conn.execute(
                        select(UsageRecord.execution_id, UsageRecord.node_id, func.count())
                        .where(UsageRecord.kind == "llm")
                        .group_by(UsageRecord.execution_id, UsageRecord.node_id)
                    )
                ).all()
            }
        await engine.dispose()

        temporal = await TemporalClient.connect(platform.temporal_address)
        statuses: Counter[str] = Counter()
        errors: dict[int, str] = {}
        stuck: list[int] = []
        lost: dict[int, int] = {}
        duplicated: dict[int, int] = {}
        disagreeing: list[str] = []
        stall, stall_run = 0.0, 0
        for run in runs:
            row = rows.get(run.execution_id)
            if row is None:
                stuck.append(run.execution_id)
                continue
            statuses[row.status] += 1
            if row.status not in FINISHED:
                stuck.append(row.id)
            elif row.status != ExecutionStatus.COMPLETED:
                errors[row.id] = str(row.error)[:200]
            if row.temporal_workflow_id:
                try:
                    described = await temporal.get_workflow_handle(
                        row.temporal_workflow_id
                    ).describe()
                    completed = described.status == WorkflowExecutionStatus.COMPLETED
                    if completed != (row.status == ExecutionStatus.COMPLETED):
                        disagreeing.append(
                            f"{row.id}: row {row.status}, Temporal {described.status}"
                        )
                except RPCError as exc:
                    disagreeing.append(f"{row.id}: Temporal: {exc.message}")
            else:
                disagreeing.append(f"{row.id}: row {row.status}, never started in Temporal")
            watcher = run.watcher
            seqs = [e["seq"] for e in watcher.events] if watcher else []
            missing = set(range(1, int(stored.get(row.id, 0)) + 1)) - set(seqs)
            if missing:
                lost[row.id] = len(missing)
            if len(seqs) != len(set(seqs)):
                duplicated[row.id] = len(seqs) - len(set(seqs))
            gap = _longest_stall(run)
            if gap > stall:
                stall, stall_run = gap, row.id

        answered: Counter[tuple[int, str]] = Counter()
        first_answer: dict[tuple[int, str], float] = {}
        by_index = {run.index: run.execution_id for run in runs}
        for request, at in zip(llm.requests, llm.answered_at, strict=False):
            key = _call_of(request["body"], by_index)
            answered[key] += 1
            first_answer.setdefault(key, at)
        over = {
            f"{e}/{n}": c - answered[(e, n)] for (e, n), c in ledger.items() if c > answered[(e, n)]
        }
        killed, unexplained = 0, {}
        for key, count in answered.items():
            missing_rows = count - ledger.get(key, 0)
            if missing_rows <= 0:
                continue
            if any(0 <= k - first_answer[key] <= 30 for k in self.kill_times):
                killed += missing_rows
            else:
                unexplained[f"{key[0]}/{key[1]}"] = missing_rows
        return Report(
            plan=self.plan,
            runs=runs,
            disruptions=self.disruptions,
            statuses=statuses,
            errors=errors,
            stuck=stuck,
            lost=lost,
            duplicated=duplicated,
            llm_answered=len(llm.requests),
            ledger_llm_rows=sum(ledger.values()),
            ledger_over=over,
            unrecorded_killed=killed,
            unrecorded_unexplained=unexplained,
            disagreeing=disagreeing,
            orphans=len(set(rows) - ids),
            longest_stall_s=stall,
            longest_stall_run=stall_run,
            elapsed_s=elapsed,
            reconnects=sum(r.watcher.reconnects for r in runs if r.watcher),
            client_retries=client.retries,
            client_throttled=client.throttled,
        )


def _call_of(body: dict[str, Any], by_index: dict[int, int]) -> tuple[int, str]:
    """(execution id, node id) of a model call, from the marker its prompt carries."""
    for message in body.get("messages", []):
        found = MARKER.search(str(message.get("content") or ""))
        if found:
            return by_index.get(int(found.group(1)), 0), found.group(2)
    return 0, "?"


def _longest_stall(run: Run) -> float:
    """The longest time between the run's creation, its events and (when it never
    finished) now, leaving out the wait for a person after ``human.waiting``."""
    if run.watcher is None:
        return 0.0
    times = [run.created_at]
    waiting_for_person: set[int] = set()
    for event in run.watcher.events:
        if event["type"] == EventType.HUMAN_WAITING:
            waiting_for_person.add(len(times))
        times.append(datetime.fromisoformat(event["ts"]).timestamp())
    last = run.watcher.events[-1]["type"] if run.watcher.events else ""
    if last not in (
        EventType.EXECUTION_COMPLETED,
        EventType.EXECUTION_FAILED,
        EventType.EXECUTION_CANCELLED,
    ):
        times.append(time.time())
    return max(
        (b - a for i, (a, b) in enumerate(pairwise(times)) if i not in waiting_for_person),
        default=0.0,
    )


# -- make chaos -------------------------------------------------------------------------------


def _arguments(argv: list[str] | None) -> tuple[Plan, Path | None, Path | None]:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("KEEL_CHAOS_RUNS", 200)))
    parser.add_argument(
        "--kill-every",
        type=float,
        default=float(os.environ.get("KEEL_CHAOS_KILL_EVERY_S", 10)),
        help="mean seconds a worker serves before it is SIGKILLed",
    )
    parser.add_argument(
        "--start-over",
        type=float,
        default=None,
        help="spread the starts over this many seconds (default 0.3 s a run)",
    )
    parser.add_argument(
        "--database",
        choices=("mariadb", "sqlite"),
        default=os.environ.get("KEEL_CHAOS_DATABASE", "mariadb"),
    )
    parser.add_argument("--deadline", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the platform's data and logs here (default: a temp dir)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "docs" / "reliability.md",
        help="where to write the table ('-' for stdout only)",
    )
    args = parser.parse_args(argv)
    plan = Plan(
        runs=args.runs,
        kill_every_s=args.kill_every,
        start_over_s=args.start_over,
        database=args.database,
        deadline_s=args.deadline,
        seed=args.seed,
    )
    report = None if str(args.report) == "-" else args.report
    return plan, args.workdir, report


def main(argv: list[str] | None = None) -> int:
    plan, workdir, report_file = _arguments(argv)
    temporary = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="keel-chaos-"))
    command = "make chaos" + (
        f' CHAOS_ARGS="{" ".join(argv or sys.argv[1:])}"' if (argv or sys.argv[1:]) else ""
    )
    sys.stderr.write(f"chaos: {plan.runs} runs, logs in {workdir}\n")
    report = asyncio.run(Chaos(plan, workdir).run())
    text = report.markdown(command)
    sys.stdout.write(text)
    if report_file is not None:
        _write_table(report_file, text)
    if temporary and report.passed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.passed else 1


BEGIN, END = "<!-- chaos table: begin -->", "<!-- chaos table: end -->"


def _write_table(path: Path, table: str) -> None:
    """Replace the table between the markers in ``path`` (the prose around it stays)."""
    text = path.read_text() if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


if __name__ == "__main__":
    from keel.cli import exit_without_teardown

    exit_without_teardown(main())  # the Temporal client's threads can abort a normal exit
