"""The whole platform for the engine tests: a real Temporal dev server, a real worker,
the real API served by uvicorn on loopback (so WebSockets are real), a real database.

Only the edges are fakes: agents use the built-in offline ``fake`` model, and tools
call HTTP servers the tests start on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from infra.db import create_engine, session_factory
from infra.security.roles import Role
from infra.settings import Settings
from tests.support.accounts import Accounts, bearer
from tests.support.net import free_port
from tests.support.responses import data
from tests.support.settings import make_settings, process_env
from tests.support.waiting import wait_for
from worker.main import build_worker
from workflows.events import EventType
from workflows.status import ExecutionStatus

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# A pricing file with one model, keel-test-model (``@pytest.mark.settings(pricing_file=...)``).
TEST_PRICES = Path(__file__).resolve().with_name("prices.json")


@dataclass
class Platform:
    settings: Settings
    client: Client
    http: httpx.AsyncClient
    base_url: str
    api_key: str = ""  # the owner key ``http`` sends, for clients of our own (keel watch)
    started: list[str] = field(default_factory=list)

    async def agent(self, name: str, **fields: Any) -> int:
        body = {"name": name, "provider": "fake", "model": "fake-echo", **fields}
        return int(data(await self.http.post("/api/v1/Agent/", json=body), 201)["id"])

    async def tool(self, name: str, url: str, **config: Any) -> int:
        body = {"name": name, "type": "http", "config": {"url": url, "method": "POST", **config}}
        return int(data(await self.http.post("/api/v1/Tool/", json=body), 201)["id"])

    async def workflow(self, definition: dict[str, Any], name: str = "flow") -> int:
        created = data(
            await self.http.post(
                "/api/v1/Workflow/", json={"name": name, "definition": definition}
            ),
            201,
        )
        data(await self.http.post(f"/api/v1/Workflow/{created['id']}/publish"))
        return int(created["id"])

    async def run(self, workflow_id: int, input: dict[str, Any] | None = None) -> dict[str, Any]:
        execution = data(
            await self.http.post(
                "/api/v1/Execution/",
                json={"workflow_id": workflow_id, "input": input or {}, "start": True},
            ),
            201,
        )
        if execution["temporal"]["workflow_id"]:
            self.started.append(execution["temporal"]["workflow_id"])
        return execution

    async def get(self, execution_id: int) -> dict[str, Any]:
        return data(await self.http.get(f"/api/v1/Execution/{execution_id}"))

    async def wait_status(
        self, execution_id: int, *statuses: str, timeout: float = 30
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            execution = await self.get(execution_id)
            return execution if execution["status"] in statuses else None

        return await wait_for(check, timeout=timeout, what=f"execution status in {statuses}")

    @property
    def auth(self) -> dict[str, str]:
        """The credential the platform's client sends (for WebSockets)."""
        return {"Authorization": self.http.headers["Authorization"]}

    def ws_url(self, execution_id: int, after: int | str | None = None) -> str:
        url = self.base_url.replace("http://", "ws://") + f"/api/v1/Execution/ws/{execution_id}"
        return url if after is None else f"{url}?after={after}"

    async def watch_until(
        self, execution_id: int, event_type: str, node_id: str | None = None, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Events from the start up to and including the first ``event_type`` (of node_id)."""
        events: list[dict[str, Any]] = []
        async with (
            asyncio.timeout(timeout),
            websockets.connect(self.ws_url(execution_id), additional_headers=self.auth) as ws,
        ):
            async for message in ws:
                events.append(json.loads(message))
                if events[-1]["type"] == event_type and (
                    node_id is None or events[-1]["node_id"] == node_id
                ):
                    return events
        raise AssertionError(f"the run ended without {event_type} {node_id or ''}: {events}")

    async def watch(
        self,
        execution_id: int,
        after: int | None = None,
        limit: int | None = None,
        timeout: float = 60,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Events from the WebSocket until it closes (or ``limit`` events), and the close code."""
        events: list[dict[str, Any]] = []
        async with (
            asyncio.timeout(timeout),
            websockets.connect(
                self.ws_url(execution_id, after), additional_headers=self.auth
            ) as ws,
        ):
            try:
                async for message in ws:
                    events.append(json.loads(message))
                    if limit is not None and len(events) >= limit:
                        return events, None
            except websockets.ConnectionClosed:
                pass
            return events, ws.close_code


@contextlib.asynccontextmanager
async def running_platform(
    database_url: str,
    data_dir: Path,
    temporal_env: WorkflowEnvironment,
    *,
    with_worker: bool,
    **overrides: Any,
) -> AsyncIterator[Platform]:
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    settings = make_settings(
        database_url,
        data_dir,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"keel-test-{tag}",
        workflow_id_prefix=f"test-{tag}",
        api_port=port,
        **overrides,
    )
    client = temporal_env.client
    engine = create_engine(settings.resolved_database_url)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            ws="websockets-sansio",
        )
    )
    serving = asyncio.create_task(server.serve())
    base_url = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as stack:
        if with_worker:
            await stack.enter_async_context(build_worker(client, settings, session_factory(engine)))
        await wait_for(lambda: _started(server), timeout=20, what="API server start")
        made = Accounts(settings)
        key = await made.api_key(Role.OWNER, name="platform owner")
        await made.close()
        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=bearer(key)) as http:
            platform = Platform(settings, client, http, base_url, api_key=key)
            yield platform
            await _close_runs(client, platform.started)
        server.should_exit = True
        await serving
    await engine.dispose()


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _close_runs(client: Client, workflow_ids: list[str]) -> None:
    """Let each run finish closing, and end the ones a test left open (so the worker
    shuts down without evicting live workflows). With KEEL_RECORD_HISTORIES=1, keep the
    finished runs' histories for the replay test."""
    record = os.environ.get("KEEL_RECORD_HISTORIES") == "1"
    name = os.environ.get("PYTEST_CURRENT_TEST", "run").split("::")[-1].split(" ")[0]
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await handle.result()
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason="test finished")
            continue
        if record:
            HISTORIES.mkdir(exist_ok=True)
            test = name.split("[")[0]
            number = workflow_id.rsplit("-", 1)[-1]
            history = await handle.fetch_history()
            (HISTORIES / f"{test}-{number}.json").write_text(history.to_json())


@contextlib.asynccontextmanager
async def worker_process(
    platform: Platform, log: Path | None = None, **settings_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real ``keel worker`` process on the platform's task queue; its stderr goes to
    ``log`` when given. ``settings_env``: more KEEL_* variables (e.g. the drain grace)."""
    env = process_env(platform.settings, **settings_env)
    with contextlib.ExitStack() as files:
        err = files.enter_context(log.open("wb")) if log else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "keel",
            "worker",
            env=env,
            cwd=log.parent if log else None,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def crash_worker_during(
    platform: Platform, execution_id: int, node_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """SIGKILL the only worker once ``node_id`` has started, start a new one, and wait for
    the run to end. Returns the events up to the crash and the final execution."""
    async with worker_process(platform) as first:
        progress = await platform.watch_until(execution_id, EventType.NODE_STARTED, node_id)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    async with worker_process(platform):
        final = await platform.wait_status(
            execution_id, ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, timeout=90
        )
    return progress, final
