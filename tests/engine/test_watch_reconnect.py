"""`keel watch` rides through API restarts: a replica that stops drains its watchers
and closes with 1012, one that is killed drops the connection; either way the
watcher reconnects with after=<last seq> and prints every event exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.engine import Platform
from tests.support.graphs import chain
from tests.support.net import free_port
from tests.support.settings import process_env
from tests.support.waiting import wait_for
from workflows.events import EventType


def api_env(platform: Platform, port: int, data_dir: Path) -> dict[str, str]:
    settings = platform.settings.model_copy(update={"data_dir": data_dir})
    return process_env(
        settings, KEEL_API_HOST="127.0.0.1", KEEL_API_PORT=str(port), KEEL_API_KEY=platform.api_key
    )  # the key: what keel watch sends


@asynccontextmanager
async def api_process(env: dict[str, str], cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``keel api`` in its own process, serving once this yields."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel",
        "api",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{env['KEEL_API_PORT']}/health"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def answers() -> bool:
                assert process.returncode is None, "keel api exited"
                try:
                    await http.get(url)
                except httpx.TransportError:
                    return False
                return True

            await wait_for(answers, timeout=60, what="keel api to answer")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_keel_watch_resumes_across_api_restarts(platform: Platform, tmp_path: Path) -> None:
    slow = await platform.agent("slow", metadata={"fake": {"delay_s": 3}})
    nodes = ["a", "b", "c", "d", "e"]
    workflow_id = await platform.workflow(
        {
            "nodes": [{"id": n, "type": "agent", "agent_id": slow} for n in nodes],
            "edges": chain(*nodes),
        }
    )
    port = free_port()
    env = api_env(platform, port, tmp_path)

    printed: list[dict[str, Any]] = []
    watch_log = tmp_path / "watch.err"
    async with api_process(env, tmp_path) as first:
        execution = await platform.run(workflow_id)
        with watch_log.open("wb") as err:
            watcher = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "keel",
                "watch",
                str(execution["id"]),
                "--api",
                f"http://127.0.0.1:{port}",
                env=env,
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )

        async def read_stdout() -> None:
            assert watcher.stdout is not None
            async for line in watcher.stdout:
                printed.append(json.loads(line))

        reader = asyncio.create_task(read_stdout())

        async def node_started(node_id: str) -> bool:
            return any(
                e["type"] == EventType.NODE_STARTED and e["node_id"] == node_id for e in printed
            )

        # A replica that stops: drains, closes 1012.
        await wait_for(lambda: node_started("a"), timeout=60, what="node a to start")
        first.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert await asyncio.wait_for(first.wait(), 30) in (0, -signal.SIGTERM)

    async with api_process(env, tmp_path) as second:
        # A replica that dies: the connection drops.
        await wait_for(lambda: node_started("c"), timeout=60, what="node c to start")
        second.send_signal(signal.SIGKILL)
        await second.wait()

    async with api_process(env, tmp_path):
        code = await asyncio.wait_for(watcher.wait(), 90)
        await reader
    stderr = watch_log.read_text()

    assert code == 0, stderr
    seqs = [e["seq"] for e in printed]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # every event, once, in order
    assert printed[-1]["type"] == EventType.EXECUTION_COMPLETED
    stored = await platform.http.get(f"/api/v1/Execution/{execution['id']}/events")
    assert [e["seq"] for e in stored.json()["data"]["items"]] == seqs

    interruptions = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    interruptions = [i for i in interruptions if i["event"] == "stream interrupted; reconnecting"]
    codes = [i["code"] for i in interruptions]
    # The stopping API drained the watcher itself (its reason), then the killed one dropped
    # it; attempts while no API listened are retried too.
    assert codes[0] == 1012 and "server restarting" in interruptions[0]["reason"], interruptions
    assert 1006 in codes[1:], interruptions
    assert all(code in (1006, 1012) for code in codes), interruptions
