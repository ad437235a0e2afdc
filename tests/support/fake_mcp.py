"""MCP servers for the tests, at the edges only.

- ``stdio_config``: a tool config that runs ``mcp_servers/stdio_server.py`` with
  this Python, as a subprocess.
- ``McpHttpService``: an MCP server built with the SDK's ``MCPServer``, served by
  uvicorn on 127.0.0.1 over streamable HTTP or SSE, which can answer the first tool
  calls with 503 and hold every request back (a slow server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from tests.support.net import free_port
from tests.support.waiting import wait_for

STDIO_SERVER = Path(__file__).resolve().parent / "mcp_servers" / "stdio_server.py"

Scope = dict[str, Any]
Message = dict[str, Any]


def stdio_config(*args: str, **config: Any) -> dict[str, Any]:
    """An MCP tool config that starts the test stdio server (extra ``args`` appended)."""
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(STDIO_SERVER), *args],
        **config,
    }


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def build_server(name: str = "keel-test-http") -> MCPServer:
    server = MCPServer(name)

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails, with the reason given."""
        raise ToolError(f"refused: {reason}")

    @server.tool()
    def big(size: int) -> str:
        """A text of ``size`` characters."""
        return "x" * size

    return server


@dataclass
class McpHttpService:
    """An MCP server on 127.0.0.1: ``url`` is its endpoint for the chosen transport."""

    transport: Literal["streamable_http", "sse"] = "streamable_http"
    fail_calls: int = 0  # answer this many tools/call requests with 503 first
    delay_s: float = 0.0  # hold every request this long (or until the service stops)
    port: int = field(default_factory=free_port)
    tool_calls: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        path = "/mcp" if self.transport == "streamable_http" else "/sse"
        return f"http://127.0.0.1:{self.port}{path}"

    def config(self, **config: Any) -> dict[str, Any]:
        return {"transport": self.transport, "url": self.url, **config}

    async def _app(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        self.requests += 1
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_s)
        if scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            request = json.loads(body or b"{}")
            if isinstance(request, dict) and request.get("method") == "tools/call":
                name = request.get("params", {}).get("name", "")
                self.tool_calls[name] += 1
                if sum(self.tool_calls.values()) <= self.fail_calls:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [(b"content-type", b"text/plain")],
                        }
                    )
                    await send({"type": "http.response.body", "body": b"try again later"})
                    return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return dict(await receive())

            await self._inner(scope, replay, send)
            return
        await self._inner(scope, receive, send)

    async def __aenter__(self) -> McpHttpService:
        server = build_server()
        self._inner = (
            server.streamable_http_app()
            if self.transport == "streamable_http"
            else server.sse_app()
        )
        self._released = asyncio.Event()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="on",
                interface="asgi3",
                timeout_graceful_shutdown=2,
            )
        )
        self._task = asyncio.create_task(self._server.serve())

        async def started() -> bool:
            return self._server.started

        await wait_for(started, timeout=10, what=f"MCP {self.transport} service")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        self._server.should_exit = True
        await self._task
