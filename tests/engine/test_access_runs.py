"""Access over the running platform: the execution WebSocket in the role matrix, and who
each control event names (``data.by``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import websockets

from infra.security.roles import Role
from tests.support.accounts import Accounts, bearer
from tests.support.engine import Platform
from tests.support.graphs import chain
from tests.support.responses import data
from workflows.events import EventType
from workflows.status import ExecutionStatus

V1 = "/api/v1"


async def _socket(
    platform: Platform, execution_id: int, headers: dict[str, str]
) -> tuple[list[dict[str, Any]], int | None]:
    """Every event the socket sends until it closes, and its close code."""
    events: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(30),
        websockets.connect(platform.ws_url(execution_id), additional_headers=headers) as ws,
    ):
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                events.append(json.loads(message))
        return events, ws.close_code


async def _key_id(platform: Platform, name: str) -> int:
    listed = data(await platform.http.get(f"{V1}/ApiKey/"))["items"]
    return int(next(k["id"] for k in listed if k["name"] == name))


async def _gated_run(platform: Platform) -> dict[str, Any]:
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "a", "type": "agent", "agent_id": agent},
                {"id": "gate", "type": "human", "prompt": "go?"},
            ],
            "edges": chain("a", "gate"),
        }
    )
    execution = await platform.run(workflow_id)
    await platform.wait_status(execution["id"], ExecutionStatus.WAITING)
    return execution


async def test_the_websocket_in_the_role_matrix(platform: Platform) -> None:
    accounts = Accounts(platform.settings)
    try:
        viewer = await accounts.api_key(Role.VIEWER, name="viewer")
        revoked = await accounts.api_key(Role.OWNER, name="revoked")
        other_ws = await accounts.workspace("other")
        outsider = await accounts.api_key(Role.OWNER, workspace_id=other_ws, name="outsider")
    finally:
        await accounts.close()
    data(await platform.http.delete(f"{V1}/ApiKey/{await _key_id(platform, 'revoked')}"))
    agent = await platform.agent("a")
    workflow_id = await platform.workflow(
        {"nodes": [{"id": "a", "type": "agent", "agent_id": agent}], "edges": chain("a")}
    )
    execution = await platform.run(workflow_id)
    await platform.wait_status(execution["id"], ExecutionStatus.COMPLETED)

    for headers in ({}, bearer("keel_" + "x" * 43), bearer(revoked)):
        events, code = await _socket(platform, execution["id"], headers)
        assert (events, code) == ([], 4401), headers
    events, code = await _socket(platform, execution["id"], bearer(outsider))
    assert (events, code) == ([], 4404)
    events, code = await _socket(platform, execution["id"], bearer(viewer))
    assert code == 1000 and events[-1]["type"] == EventType.EXECUTION_COMPLETED


async def test_human_responded_names_who_answered(platform: Platform) -> None:
    accounts = Accounts(platform.settings)
    try:
        editor = await accounts.api_key(Role.EDITOR, name="responder")
    finally:
        await accounts.close()
    execution = await _gated_run(platform)
    data(
        await platform.http.post(
            f"{V1}/Execution/{execution['id']}/signal",
            json={"node_id": "gate", "action": "approve"},
            headers=bearer(editor),
        )
    )
    events = await platform.watch_until(execution["id"], EventType.HUMAN_RESPONDED, "gate")
    assert events[-1]["data"]["by"] == {
        "type": "api_key",
        "id": await _key_id(platform, "responder"),
        "name": "responder",
    }


async def test_cancel_through_the_api_names_the_caller(platform: Platform) -> None:
    execution = await _gated_run(platform)
    data(await platform.http.post(f"{V1}/Execution/{execution['id']}/cancel"))
    events = await platform.watch_until(execution["id"], EventType.EXECUTION_CANCELLED)
    assert events[-1]["data"]["by"] == {
        "type": "api_key",
        "id": await _key_id(platform, "platform owner"),
        "name": "platform owner",
    }


async def test_cancel_in_temporal_names_the_operator(platform: Platform) -> None:
    execution = await _gated_run(platform)
    await platform.client.get_workflow_handle(execution["temporal"]["workflow_id"]).cancel()
    events = await platform.watch_until(execution["id"], EventType.EXECUTION_CANCELLED)
    assert events[-1]["data"]["by"]["type"] == "operator"
