"""WebSocket credentials: the Authorization header or a single-use ticket, over a real
server; a revoked key's open sockets close.

The execution WebSocket adopts ``websocket_caller`` and ``socket_guard`` in the wiring
task; here a small route shows the helpers' behaviour on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.stdlib import ProcessorFormatter

from api.main import create_app
from api.principal import CLOSE_UNAUTHORIZED, websocket_caller
from infra.models import WsTicket
from infra.security.roles import Role
from infra.settings import Settings
from tests.api.test_billing import published_workflow
from tests.api.test_workflows import make_agent
from tests.support.accounts import Accounts, bearer
from tests.support.net import free_port
from tests.support.responses import data
from tests.support.waiting import wait_for


def with_probe(app: FastAPI) -> FastAPI:
    @app.websocket("/probe")
    async def probe(websocket: WebSocket) -> None:
        await websocket.accept()
        caller = await websocket_caller(websocket)
        if caller is None:
            await websocket.close(CLOSE_UNAUTHORIZED, "a valid credential is needed")
            return
        async with websocket.app.state.socket_guard.watching(caller, websocket):
            await websocket.send_json(
                {"type": caller.principal.type, "workspace_id": caller.workspace_id}
            )
            with contextlib.suppress(Exception):
                while True:
                    await websocket.receive_text()

    return app


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    app = with_probe(create_app(settings))
    served = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws="websockets-sansio"
        )
    )
    task = asyncio.create_task(served.serve())

    async def started() -> bool:
        return served.started

    await wait_for(started, timeout=20, what="API server start")
    app.state.socket_guard.interval_s = 0.2
    yield f"127.0.0.1:{port}"
    served.should_exit = True
    await task


async def closed_code(ws: websockets.ClientConnection) -> int | None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    return ws.close_code


async def test_the_authorization_header_opens_the_socket(server: str, accounts: Accounts) -> None:
    key = await accounts.api_key(Role.VIEWER)
    async with websockets.connect(f"ws://{server}/probe", additional_headers=bearer(key)) as ws:
        assert (await ws.recv()) == '{"type":"api_key","workspace_id":1}'


@pytest.mark.parametrize("how", ["nothing", "bad key", "bad ticket"])
async def test_without_a_valid_credential_it_closes_4401_first(server: str, how: str) -> None:
    url, headers = f"ws://{server}/probe", None
    if how == "bad key":
        headers = bearer("keel_" + "a" * 43)
    elif how == "bad ticket":
        url += "?ticket=" + "a" * 43
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert await closed_code(ws) == CLOSE_UNAUTHORIZED


async def test_a_ticket_works_once_and_for_60_seconds(
    server: str, accounts: Accounts, db: AsyncEngine
) -> None:
    key = await accounts.api_key(Role.VIEWER)
    async with httpx.AsyncClient(base_url=f"http://{server}", headers=bearer(key)) as http:
        made = data(await http.post("/api/v1/Auth/ws-ticket"))
        assert made["expires_in"] == 60
        async with websockets.connect(f"ws://{server}/probe?ticket={made['ticket']}") as ws:
            assert "api_key" in str(await ws.recv())
        async with websockets.connect(f"ws://{server}/probe?ticket={made['ticket']}") as ws:
            assert await closed_code(ws) == CLOSE_UNAUTHORIZED  # used already

        stale = data(await http.post("/api/v1/Auth/ws-ticket"))["ticket"]
        async with db.begin() as conn:
            await conn.execute(
                update(WsTicket).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        async with websockets.connect(f"ws://{server}/probe?ticket={stale}") as ws:
            assert await closed_code(ws) == CLOSE_UNAUTHORIZED
        # No ticket without a credential.
        assert (
            await http.post("/api/v1/Auth/ws-ticket", headers={"Authorization": ""})
        ).status_code == 401


async def test_a_ticket_is_not_in_the_logs(server: str, accounts: Accounts) -> None:
    """uvicorn logs a WebSocket's request line, query and all, before the route redeems
    the ticket in it: the line is written with the ticket masked."""
    root = logging.getLogger()
    lines = io.StringIO()
    copy = logging.StreamHandler(lines)
    # The API's JSON lines, as its lifespan configured them (configure_logging).
    ours = next(h for h in root.handlers if isinstance(h.formatter, ProcessorFormatter))
    copy.setFormatter(ours.formatter)
    root.addHandler(copy)
    key = await accounts.api_key(Role.VIEWER)
    try:
        async with httpx.AsyncClient(base_url=f"http://{server}", headers=bearer(key)) as http:
            ticket = data(await http.post("/api/v1/Auth/ws-ticket"))["ticket"]
        async with websockets.connect(f"ws://{server}/probe?ticket={ticket}") as ws:
            assert "api_key" in str(await ws.recv())
    finally:
        root.removeHandler(copy)
    logged = lines.getvalue()
    assert "/probe?ticket=***" in logged  # the request line is there, masked
    assert ticket not in logged


async def test_revoking_a_key_closes_its_sockets(
    server: str, accounts: Accounts, db: AsyncEngine
) -> None:
    admin = await accounts.api_key(Role.ADMIN, name="admin")
    watcher = await accounts.api_key(Role.VIEWER, name="watcher")
    async with httpx.AsyncClient(base_url=f"http://{server}", headers=bearer(admin)) as http:
        watcher_id = data(await http.get("/api/v1/Auth/me", headers=bearer(watcher)))["principal"][
            "id"
        ]
        async with websockets.connect(
            f"ws://{server}/probe", additional_headers=bearer(watcher)
        ) as ws:
            await ws.recv()
            data(await http.delete(f"/api/v1/ApiKey/{watcher_id}"))
            assert await closed_code(ws) == CLOSE_UNAUTHORIZED


async def test_a_key_revoked_elsewhere_closes_within_the_check_interval(
    server: str, accounts: Accounts, db: AsyncEngine
) -> None:
    """Another replica revoked it: only the database knows; the guard's check finds it."""
    from infra.models import ApiKey

    watcher = await accounts.api_key(Role.VIEWER, name="watcher")
    async with websockets.connect(f"ws://{server}/probe", additional_headers=bearer(watcher)) as ws:
        await ws.recv()
        async with db.begin() as conn:
            await conn.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        assert await closed_code(ws) == CLOSE_UNAUTHORIZED


async def test_the_lines_about_one_execution_name_it(server: str, accounts: Accounts) -> None:
    """A request acting on one execution, and a socket watching one, log with its id:
    our request lines and uvicorn's line for the socket alike."""
    # The API's log stream, as its lifespan configured it (configure_logging): our lines
    # and the standard library's (uvicorn's) go through this handler's stream.
    ours = next(
        h for h in logging.getLogger().handlers if isinstance(h.formatter, ProcessorFormatter)
    )
    logged = io.StringIO()
    before = ours.setStream(logged)
    key = await accounts.api_key(Role.EDITOR)
    try:
        async with httpx.AsyncClient(base_url=f"http://{server}", headers=bearer(key)) as http:
            workflow = await published_workflow(http, await make_agent(http), "logged")
            created = data(
                await http.post("/api/v1/Execution/", json={"workflow_id": workflow}), 201
            )
            execution_id = created["id"]
            data(await http.get(f"/api/v1/Execution/{execution_id}"))
            assert (await http.get("/api/v1/Execution/999999")).status_code == 404
            data(await http.get("/api/v1/Agent/"))
        url = f"ws://{server}/api/v1/Execution/ws/{execution_id}"
        async with websockets.connect(url, additional_headers=bearer(key)):
            pass
    finally:
        ours.setStream(before)
    lines = [json.loads(line) for line in logged.getvalue().splitlines()]

    def line(**fields: object) -> dict[str, object]:
        return next(x for x in lines if fields.items() <= x.items())

    assert line(method="POST", path="/api/v1/Execution/")["execution_id"] == execution_id
    assert line(path=f"/api/v1/Execution/{execution_id}")["execution_id"] == execution_id
    assert line(path="/api/v1/Execution/999999", status=404)["execution_id"] == 999999
    socket = next(x for x in lines if "[accepted]" in str(x["event"]))
    assert socket["execution_id"] == execution_id
    assert "execution_id" not in line(path="/api/v1/Agent/")  # it names no execution
