"""`keel watch` follows a run from the command line, as a person would."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.support.engine import Platform
from tests.support.graphs import chain
from workflows.events import EventType


async def watch(platform: Platform, *args: str) -> tuple[int, list[dict], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel",
        "watch",
        *args,
        "--api",
        platform.base_url,
        env={**os.environ, "KEEL_API_KEY": platform.api_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    events = [json.loads(line) for line in out.decode().splitlines()]
    return process.returncode or 0, events, err.decode()


async def test_keel_watch_prints_every_event_then_exits(platform: Platform) -> None:
    agent = await platform.agent("a", metadata={"fake": {"delay_s": 0.5}})
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": agent}], "edges": chain("a")}
    )
    execution = await platform.run(workflow_id)

    code, events, _ = await watch(platform, str(execution["id"]))
    assert code == 0
    assert [e["type"] for e in events] == [
        EventType.EXECUTION_STARTED,
        EventType.NODE_STARTED,
        EventType.USAGE_RECORDED,
        EventType.NODE_COMPLETED,
        EventType.EXECUTION_COMPLETED,
    ]

    code, events, _ = await watch(platform, str(execution["id"]), "--after", "2")
    assert code == 0 and [e["seq"] for e in events] == [3, 4, 5]

    code, events, err = await watch(platform, "424242")
    assert code == 1 and events == [] and "4404" in err
