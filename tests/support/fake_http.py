"""Fakes for the edges only: an HTTP service that tools call, served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.net import free_port
from tests.support.waiting import wait_for


@dataclass
class Behaviour:
    fail_times: int = 0  # answer 500 this many times first
    status: int = 200
    body: Any = None


@dataclass
class HttpToolService:
    """Answers POST /<name> with JSON; counts calls and remembers what it was sent."""

    port: int = field(default_factory=free_port)
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        self.calls[name] += 1
        body = json.loads(await request.body() or b"{}")
        self.requests.append(
            {
                "name": name,
                "body": body,
                "idempotency_key": request.headers.get("idempotency-key"),
                "headers": dict(request.headers),
            }
        )
        behaviour = self.behaviours.get(name, Behaviour())
        if self.calls[name] <= behaviour.fail_times:
            return JSONResponse({"error": "temporarily broken"}, status_code=500)
        answer = behaviour.body if behaviour.body is not None else {"echo": body, "tool": name}
        return JSONResponse(answer, status_code=behaviour.status)

    async def __aenter__(self) -> HttpToolService:
        app = Starlette(routes=[Route("/{name}", self._handle, methods=["GET", "POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._task = asyncio.create_task(self._server.serve())

        async def started() -> bool:
            return self._server.started

        await wait_for(started, timeout=10, what="fake HTTP tool service")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        await self._task
