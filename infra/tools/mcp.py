"""MCP tools through the official SDK (``mcp`` 2.x).

The transport is the one the tool's config names (``stdio``, ``streamable_http`` or
``sse``), never guessed from the command or URL. Each call opens a connection,
negotiates the protocol (``server/discover``, falling back to ``initialize`` for older
servers), makes its requests and closes it again, so nothing is shared between calls
or across a retry.

- ``timeout_s`` (the tool's, else ``KEEL_MCP_TIMEOUT_S``) bounds connecting and each
  request.
- stdio commands must pass ``infra.tools.stdio_policy`` (listed exactly in
  ``KEEL_MCP_STDIO_ALLOWED``, no interpreter with inline code). The server starts with a
  minimal environment (the SDK's: HOME, PATH, ...) plus the tool's ``env``, so the
  worker's own secrets are not inherited. Its stderr is kept in a temporary file and its
  tail is quoted when it fails.
- HTTP transports resolve the host once, refuse non-public addresses and connect to the
  address checked, redirects unfollowed (see ``infra.tools.network``).
- Secret values (env, secret headers) are decrypted here, right before use, and are
  masked in every message and result this module returns.
- Cancellation (``asyncio.CancelledError``) is never caught: it propagates as soon as
  the SDK has stopped the server process (stdin closed, then SIGTERM and SIGKILL, each
  bounded), so a cancelled or failed call leaves no process behind.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import IO, Any, TextIO, TypeVar, cast

import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from pydantic import ValidationError

from infra.logging import get_logger
from infra.secrets import SecretDecryptionError
from infra.settings import Settings
from infra.tools.common import (
    RetryableToolError,
    ToolOutcome,
    argument_errors,
    cut_text,
    reveal,
    scrub,
    secret_values,
)
from infra.tools.network import (
    Failure,
    PinnedTransport,
    exception_chain,
    network_failure,
    resolve_destination,
    status_failure,
)
from infra.tools.stdio_policy import stdio_refusal

log = get_logger("keel.tools.mcp")
T = TypeVar("T")

TRANSPORTS = ("stdio", "streamable_http", "sse")
STDERR_TAIL_CHARS = 1000
MAX_TOOL_PAGES = 20  # a server that paginates list_tools forever cannot hang discovery
CLIENT_INFO = Implementation(name="keel", version="0.1.0")


class McpFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class _Connection:
    """What one connection attempt learned, to explain a failure. ``step`` is what it
    was doing: connecting, listing tools, calling 'x'."""

    transport: str
    where: str  # the URL, or "the stdio server 'cmd'"
    timeout_s: float
    secrets: list[str] = field(default_factory=list)
    step: str = "connecting"
    statuses: list[int] = field(default_factory=list)  # of failed POSTs
    stream_errors: list[Exception] = field(default_factory=list)
    errlog: IO[bytes] | None = None

    async def on_message(self, message: Any) -> None:
        # The SDK hands transport faults (lines that are not JSON-RPC) to the handler.
        if isinstance(message, Exception):
            self.stream_errors.append(message)

    async def on_response(self, response: httpx2.Response) -> None:
        # Messages are POSTed; a GET is the optional event stream, which a server may
        # refuse without the session failing.
        if response.request.method == "POST" and response.status_code >= 400:
            self.statuses.append(response.status_code)

    def stderr_tail(self) -> str:
        if self.errlog is None:
            return ""
        try:
            self.errlog.seek(0, os.SEEK_END)
            size = self.errlog.tell()
            self.errlog.seek(max(0, size - STDERR_TAIL_CHARS * 4))
            text = self.errlog.read().decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return text[-STDERR_TAIL_CHARS:]

    def scrub(self, value: Any) -> Any:
        return scrub(value, self.secrets)


# Environment variables that make any program load code of the caller's choosing.
UNSAFE_ENV_PREFIXES = ("LD_", "DYLD_")


def _executable(command: str) -> str:
    """The file to run: a bare name is resolved on the worker's PATH here, so a PATH in
    the tool's env cannot swap in another program of that name."""
    if "/" in command:
        return command
    found = shutil.which(command)
    if found is None:
        raise McpFailure(Failure("spawn_failed", f"cannot start {command!r}: not found on PATH"))
    return found


def _timeout(config: dict[str, Any], settings: Settings) -> float:
    value = config.get("timeout_s")
    return float(value) if value else settings.mcp_timeout_s


async def _open(
    stack: AsyncExitStack,
    name: str,
    config: dict[str, Any],
    secret_key: str,
    settings: Settings,
    conn: _Connection,
) -> Client:
    """A connected client (protocol negotiated), its resources on ``stack``."""
    transport = conn.transport
    try:
        env = reveal(config.get("env"), secret_key)
        headers = reveal(config.get("headers"), secret_key)
    except SecretDecryptionError as exc:
        raise McpFailure(
            Failure("invalid", f"a secret of this tool cannot be used: {exc}")
        ) from None
    conn.secrets = secret_values(config.get("env"), env, all_secret=True) + secret_values(
        config.get("headers"), headers, all_secret=False
    )
    server: Any
    if transport == "stdio":
        command = str(config.get("command") or "")
        refusal = stdio_refusal(
            command, [str(a) for a in config.get("args") or []], settings.mcp_stdio_allowed
        )
        if refusal is not None:
            raise McpFailure(Failure("not_allowed", refusal))
        unsafe = sorted(k for k in env if k.upper().startswith(UNSAFE_ENV_PREFIXES))
        if unsafe:
            raise McpFailure(
                Failure(
                    "not_allowed",
                    f"config.env may not set {unsafe[0]} (it makes the server load other code)",
                )
            )
        executable = _executable(command)
        # Kept past the connection's end: the tail explains a failure.
        conn.errlog = tempfile.TemporaryFile()  # closed by _session
        params = StdioServerParameters(
            command=executable, args=[str(a) for a in config.get("args") or []], env=env
        )
        server = stdio_client(params, errlog=cast(TextIO, conn.errlog))
    elif transport in ("streamable_http", "sse"):
        url = str(config.get("url") or "")
        destination = await resolve_destination(url, settings, conn.timeout_s)
        if isinstance(destination, Failure):
            raise McpFailure(destination)

        def http_client(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            # Our own deadlines bound every phase; the transport's reads need none.
            # To the address just checked (no second DNS answer), redirects not followed.
            transport = cast(
                httpx2.AsyncBaseTransport,
                PinnedTransport(destination, httpx2.AsyncHTTPTransport(), httpx2.ConnectError),
            )
            return httpx2.AsyncClient(
                headers=headers,
                auth=auth,
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx2.Timeout(conn.timeout_s, read=None),
                event_hooks={"response": [conn.on_response]},
            )

        if transport == "sse":
            server = sse_client(
                url,
                headers=headers,
                timeout=conn.timeout_s,
                sse_read_timeout=conn.timeout_s * 4,
                httpx_client_factory=http_client,
            )
        else:
            client = await stack.enter_async_context(http_client(headers=headers))
            server = streamable_http_client(url, http_client=client)
    else:
        raise McpFailure(
            Failure(
                "invalid",
                f"unknown MCP transport {transport!r}; use one of {', '.join(TRANSPORTS)}",
            )
        )
    mcp = Client(
        server,
        read_timeout_seconds=conn.timeout_s,
        client_info=CLIENT_INFO,
        message_handler=conn.on_message,
    )
    async with asyncio.timeout(conn.timeout_s):
        return await stack.enter_async_context(mcp)


SPAWN_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR}
)


def _explain(exc: BaseException, conn: _Connection) -> Failure:
    """The failure to report for ``exc``, raised while ``conn.step``."""
    chain = list(exception_chain(exc))
    where, step = conn.where, conn.step
    mcp_error = next((e for e in chain if isinstance(e, MCPError)), None)
    if conn.statuses:
        return status_failure(conn.statuses[-1], where, "the MCP endpoint refused the request")
    protocol = (
        f"; the server also sent output that is not MCP: {conn.stream_errors[0]}"
        if conn.stream_errors
        else ""
    )
    if conn.transport == "stdio":
        spawn = next((e for e in chain if isinstance(e, OSError) and e.errno in SPAWN_ERRNOS), None)
        if spawn is not None and step == "connecting":
            return Failure("spawn_failed", f"cannot start {where}: {spawn.strerror or spawn}")
    if (isinstance(mcp_error, MCPError) and mcp_error.code == REQUEST_TIMEOUT) or any(
        isinstance(e, TimeoutError) for e in chain
    ):
        if protocol:
            return Failure(
                "protocol",
                f"MCP protocol error: no answer from {where} within "
                f"{conn.timeout_s:g}s while {step}{protocol}",
            )
        return Failure(
            "timeout", f"timed out after {conn.timeout_s:g}s {step} ({where})", retryable=True
        )
    closed = (isinstance(mcp_error, MCPError) and mcp_error.code == CONNECTION_CLOSED) or any(
        isinstance(e, ConnectionError) for e in chain
    )
    if closed and conn.transport == "stdio":
        tail = conn.stderr_tail()
        return Failure(
            "process_exited",
            f"the MCP server process ({where}) exited or closed its output while "
            f"{step}{protocol}; "
            + (f"its stderr ends with: {tail}" if tail else "it wrote nothing to stderr"),
        )
    sse = next((e for e in chain if isinstance(e, httpx2.SSEError)), None)
    if sse is not None:
        return Failure("protocol", f"MCP protocol error from {where} while {step}: {sse}")
    network = network_failure(exc, where, conn.timeout_s)
    if network is not None:
        return network
    if closed:
        return Failure("connection", f"{where} closed the connection while {step}", retryable=True)
    if isinstance(mcp_error, MCPError):
        said = (
            mcp_error.error.message.strip().splitlines()[0][:300]
            if mcp_error.error.message.strip()
            else "no message"
        )
        return Failure(
            "protocol",
            f"MCP protocol error from {where} while {step}: "
            f"{said} (code {mcp_error.code}){protocol}",
        )
    invalid = next((e for e in chain if isinstance(e, ValidationError)), None)
    if invalid is not None:
        return Failure(
            "protocol",
            f"MCP protocol error from {where} while {step}: the answer "
            f"does not follow the protocol ({invalid.error_count()} "
            "problems)",
        )
    return Failure("protocol", f"MCP error from {where} while {step}: {type(exc).__name__}: {exc}")


async def _session(
    name: str,
    config: dict[str, Any],
    secret_key: str,
    settings: Settings,
    timeout_s: float,
    work: Callable[[Client, _Connection], Awaitable[T]],
) -> T:
    """Connect, run ``work``, disconnect; any failure raised as McpFailure, scrubbed."""
    transport = str(config.get("transport"))
    where = (
        f"the stdio server {config.get('command')!r}"
        if transport == "stdio"
        else str(config.get("url"))
    )
    conn = _Connection(transport=transport, where=where, timeout_s=timeout_s)
    done = False
    result: T | None = None
    try:
        async with AsyncExitStack() as stack:
            client = await _open(stack, name, config, secret_key, settings, conn)
            result = await work(client, conn)
            done = True
    except McpFailure as exc:
        raise McpFailure(
            Failure(exc.failure.kind, conn.scrub(exc.failure.message), exc.failure.retryable)
        ) from None
    except Exception as exc:
        if done:
            # The answer arrived; only closing the connection went wrong.
            log.warning(
                "closing the MCP connection failed",
                tool=name,
                error=conn.scrub(f"{type(exc).__name__}: {exc}"),
            )
        else:
            failure = _explain(exc, conn)
            raise McpFailure(
                Failure(failure.kind, conn.scrub(failure.message), failure.retryable)
            ) from None
    finally:
        if conn.errlog is not None:
            conn.errlog.close()
    if conn.stream_errors:
        log.warning(
            "the MCP server sent output that is not MCP", tool=name, count=len(conn.stream_errors)
        )
    return cast(T, result)


async def _list_tools(client: Client, conn: _Connection) -> list[dict[str, Any]]:
    conn.step = "listing tools"
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        async with asyncio.timeout(conn.timeout_s):
            page = await client.list_tools(cursor=cursor)
        tools += [
            {"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
            for t in page.tools
        ]
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        return str(text) if text is not None else f"[resource {resource.uri}]"
    if kind == "resource_link":
        return f"[resource link {block.uri}]"
    if kind in ("image", "audio"):
        return f"[{kind} {getattr(block, 'mime_type', '')}]"
    return f"[{kind or type(block).__name__} content]"


def _outcome(name: str, target: str, result: Any, limit: int, conn: _Connection) -> ToolOutcome:
    """A CallToolResult as an outcome: structured content if any, else the text joined."""
    text = "\n".join(_block_text(b) for b in result.content or [])
    if result.is_error:
        message = cut_text(text, 2000) or "no message"
        return ToolOutcome(
            ok=False,
            error=conn.scrub(f"{name}: the MCP tool {target!r} reported an error: {message}"),
        )
    output: Any
    if result.structured_content is not None:
        encoded = json.dumps(result.structured_content, ensure_ascii=False)
        output = cut_text(encoded, limit) if len(encoded) > limit else result.structured_content
    else:
        output = cut_text(text, limit)
    return ToolOutcome(ok=True, output=conn.scrub(output))


async def _call(
    client: Client, conn: _Connection, name: str, target: str, arguments: dict[str, Any], limit: int
) -> ToolOutcome:
    conn.step = f"calling {target!r}"
    async with asyncio.timeout(conn.timeout_s):
        result = await client.call_tool(target, arguments)
    return _outcome(name, target, result, limit, conn)


async def call_mcp(
    name: str,
    config: dict[str, Any],
    input_schema: dict[str, Any] | None,
    arguments: dict[str, Any],
    secret_key: str,
    settings: Settings,
) -> ToolOutcome:
    """Call the tool ``config["tool_name"]`` (else ``name``) on its MCP server.

    Invalid arguments, a result with ``isError``, protocol errors, DNS and TLS failures,
    blocked destinations, a command not allowed and a server process that exits are a
    failed outcome; refused connections, timeouts, 429 and 5xx raise RetryableToolError.
    """
    started = time.perf_counter()
    problem = argument_errors(input_schema, arguments)
    if problem:
        return ToolOutcome(ok=False, error=f"invalid arguments for {name}: {problem}")
    target = str(config.get("tool_name") or name)
    limit = settings.tool_max_response_chars

    async def work(client: Client, conn: _Connection) -> ToolOutcome:
        return await _call(client, conn, name, target, arguments, limit)

    try:
        outcome = await _session(
            name, config, secret_key, settings, _timeout(config, settings), work
        )
    except McpFailure as exc:
        message = f"{name}: {exc.failure.message}"
        log.warning(
            "mcp tool call failed",
            tool=name,
            transport=config.get("transport"),
            reason=exc.failure.kind,
            retryable=exc.failure.retryable,
            error=message,
        )
        if exc.failure.retryable:
            raise RetryableToolError(message) from None
        return ToolOutcome(
            ok=False, error=message, latency_ms=(time.perf_counter() - started) * 1000
        )
    outcome.latency_ms = (time.perf_counter() - started) * 1000
    log.info(
        "mcp tool called",
        tool=name,
        transport=config.get("transport"),
        ok=outcome.ok,
        latency_ms=round(outcome.latency_ms, 1),
        error=outcome.error,
    )
    return outcome


async def probe_mcp(
    name: str,
    config: dict[str, Any],
    secret_key: str,
    settings: Settings,
    arguments: dict[str, Any] | None = None,
    *,
    timeout_s: float | None = None,
) -> ToolOutcome:
    """Connect, list the server's tools and, when ``arguments`` are given, call the tool.

    Never raises for a failure (retryable or not): it is ``ok=False`` with the reason.
    ``ok`` is also false when the server does not offer the tool. ``timeout_s``, when
    given, replaces the tool's own (discovery waits less than a call would).
    """
    started = time.perf_counter()
    target = str(config.get("tool_name") or name)
    limit = settings.tool_max_response_chars

    async def work(client: Client, conn: _Connection) -> ToolOutcome:
        tools = await _list_tools(client, conn)
        if not any(t["name"] == target for t in tools):
            offered = ", ".join(repr(t["name"]) for t in tools[:20]) or "none"
            return ToolOutcome(
                ok=False,
                tools=tools,
                error=(
                    f"{name}: the MCP server offers no tool named {target!r} (it offers: "
                    f"{offered}); set config.tool_name to one of them"
                ),
            )
        if arguments is None:
            return ToolOutcome(ok=True, tools=tools)
        outcome = await _call(client, conn, name, target, arguments, limit)
        outcome.tools = tools
        return outcome

    try:
        outcome = await _session(
            name, config, secret_key, settings, timeout_s or _timeout(config, settings), work
        )
    except McpFailure as exc:
        outcome = ToolOutcome(ok=False, error=f"{name}: {exc.failure.message}")
    outcome.latency_ms = (time.perf_counter() - started) * 1000
    return outcome
