"""Keel as separate processes for the scale-out and chaos runs: API and worker
processes (``python -m keel api|worker``) on one Temporal and one database, a fake
model server that knows which calls it answered, and watchers that reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import websockets
from starlette.requests import Request
from starlette.responses import Response
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client as TemporalClient

from infra.settings import Settings
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.net import free_port
from tests.support.settings import process_env
from tests.support.waiting import wait_for


@dataclass
class KeelProcess:
    """One ``keel api`` or ``keel worker`` child, its output in ``log``."""

    role: str
    env: dict[str, str]
    log: Path
    port: int | None = None
    process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keel",
                self.role,
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        if self.role == "api":
            async with httpx.AsyncClient(timeout=2) as http:

                async def up() -> bool:
                    try:
                        return (await http.get(f"{self.base_url}/health")).status_code < 600
                    except httpx.TransportError:
                        return False

                await wait_for(up, timeout=60, what=f"the API on port {self.port}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.alive and self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.alive and self.process is not None:
            self.process.terminate()
            try:
                async with asyncio.timeout(40):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()


async def poller_identities(
    temporal: TemporalClient,
    task_queue: str,
    kind: TaskQueueType.ValueType = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
) -> set[str]:
    """Who polls ``task_queue`` for ``kind`` tasks: each worker's identity, ``pid@host``."""
    described = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        )
    )
    return {poller.identity for poller in described.pollers}


def polled_by(identities: set[str], pid: int) -> bool:
    return any(identity.startswith(f"{pid}@") for identity in identities)


async def wait_until_polling(
    temporal: TemporalClient, task_queue: str, workers: Sequence[KeelProcess]
) -> None:
    """Until every worker polls ``task_queue`` for workflow and activity tasks. A worker
    still starting when the load begins would find every run sticky to the others."""
    pids = [w.process.pid for w in workers if w.process]

    async def all_polling() -> bool:
        for kind in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            identities = await poller_identities(temporal, task_queue, kind)
            if not all(polled_by(identities, pid) for pid in pids):
                return False
        return True

    await wait_for(all_polling, timeout=60, what=f"workers {pids} polling")


def api_process(settings: Settings, log_dir: Path, name: str) -> KeelProcess:
    port = free_port()
    env = process_env(
        settings, KEEL_API_HOST="127.0.0.1", KEEL_API_PORT=str(port), KEEL_LOG_LEVEL="WARNING"
    )
    return KeelProcess("api", env, log_dir / f"{name}.log", port)


def worker_process(settings: Settings, log_dir: Path, name: str) -> KeelProcess:
    return KeelProcess(
        "worker",
        process_env(settings, KEEL_WORKER_SHUTDOWN_GRACE_S="5", KEEL_LOG_LEVEL="WARNING"),
        log_dir / f"{name}.log",
    )


@dataclass
class CountingOpenAI(FakeOpenAI):
    """The fake model server, holding answers while ``gate`` is closed, and counting a
    call as answered only if its caller was still there to get the answer: a worker
    killed while waiting was never answered, so the ledger owes it no row."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    answered: int = 0
    held: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    async def _complete(self, request: Request) -> Response:
        # Read the body first: is_disconnected() would swallow it otherwise.
        await request.body()
        self.held += 1
        try:
            await self.gate.wait()
        finally:
            self.held -= 1
        if await request.is_disconnected():
            return Response(status_code=499)
        self.answered += 1
        return await super()._complete(request)


def streaming_llm() -> CountingOpenAI:
    return CountingOpenAI([Turn(content="a short answer streamed word by word")])


class Api(Protocol):
    """Where a client finds an API: a ``KeelProcess``, or the API of ``keel up``."""

    @property
    def base_url(self) -> str: ...

    @property
    def alive(self) -> bool: ...


@dataclass
class Watcher:
    """Follows one execution over WebSocket from any of ``apis``, reconnecting with
    ``after=<last seq>`` when its API drops it, refuses it, or closes with 1012."""

    execution_id: int
    apis: Sequence[Api]
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.time() of each event
    reconnects: int = 0

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def follow(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                api = next((a for a in self.apis if a.alive), None)
                if api is None:
                    raise AssertionError("no API left to watch from")
                url = (
                    api.base_url.replace("http://", "ws://")
                    + f"/api/v1/Execution/ws/{self.execution_id}?after={self.last_seq}"
                )
                try:
                    async with websockets.connect(url, additional_headers=self.headers) as ws:
                        async for message in ws:
                            self.events.append(json.loads(message))
                            self.received_at.append(time.time())
                    return  # closed normally after the last event
                except websockets.ConnectionClosed as closed:
                    if closed.rcvd is not None and closed.rcvd.code in (1000,):
                        return
                except (OSError, websockets.InvalidHandshake, TimeoutError):
                    pass  # down, restarting, or refusing for now (e.g. 503): again
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def duplicates(self) -> int:
        seqs = [e["seq"] for e in self.events]
        return len(seqs) - len(set(seqs))

    def gaps(self) -> int:
        seqs = sorted({e["seq"] for e in self.events})
        return (seqs[-1] - len(seqs)) if seqs else 0


class Client:
    """An API client that moves to a live API when its own one is gone."""

    def __init__(self, apis: list[KeelProcess], headers: dict[str, str]) -> None:
        self.apis = apis
        self.http = httpx.AsyncClient(timeout=30, headers=headers)

    async def request(
        self, preferred: int, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """The request on API ``preferred`` (an index), or on another if that one is down."""
        order = self.apis[preferred:] + self.apis[:preferred]
        last: Exception | None = None
        for _ in range(3):
            for api in order:
                if not api.alive:
                    continue
                try:
                    return await self.http.request(method, api.base_url + path, **kwargs)
                except httpx.ConnectError as exc:  # never sent: safe to send elsewhere
                    last = exc
            await asyncio.sleep(0.5)
        raise AssertionError(f"no API answered {method} {path}: {last}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.http.aclose()
