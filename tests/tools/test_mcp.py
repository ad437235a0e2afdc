"""The MCP client against real MCP servers started on loopback: a stdio subprocess, and
streamable HTTP and SSE servers built with the SDK's MCPServer, served by uvicorn."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from infra.secrets import encrypt
from infra.settings import Settings
from infra.tools.common import RetryableToolError
from infra.tools.mcp import call_mcp, probe_mcp
from infra.tools.stdio_policy import inline_code_argument, stdio_refusal
from tests.support.fake_http import HttpToolService
from tests.support.fake_mcp import McpHttpService, process_gone, stdio_config
from tests.support.net import UNRESOLVABLE_HOST, free_port
from tests.support.settings import make_settings
from tests.support.waiting import wait_for

KEY = "test-secret-key-that-is-long-enough-0123456789"
API_TOKEN = "mcp-token-5f4e3d2c1b"
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"title": "Text", "type": "string"}},
    "required": ["text"],
    "title": "echoArguments",
}


@pytest.fixture
def tool_settings(tmp_path: Path) -> Settings:
    # No database or Temporal is used here; the settings only carry the tool limits.
    return make_settings("sqlite+aiosqlite:///unused.db", tmp_path)


def sealed_env(**values: str) -> dict[str, Any]:
    """MCP env as the API stores it: every value encrypted."""
    return {k: {"value": encrypt(v, KEY), "secret": True} for k, v in values.items()}


def script(tmp_path: Path, code: str) -> dict[str, Any]:
    """A stdio config running ``code`` from a file (inline code is refused)."""
    path = tmp_path / f"server_{abs(hash(code))}.py"
    path.write_text(code)
    return {"transport": "stdio", "command": sys.executable, "args": [str(path)]}


async def call(
    config: dict[str, Any],
    settings: Settings,
    arguments: dict[str, Any],
    name: str = "echo",
    schema: dict[str, Any] | None = None,
) -> Any:
    return await call_mcp(name, config, schema, arguments, KEY, settings)


# --- the three transports ------------------------------------------------------------


async def test_stdio_call_passes_env_secrets_to_the_server(tool_settings: Settings) -> None:
    config = stdio_config(env=sealed_env(API_TOKEN=API_TOKEN), tool_name="env_status")
    outcome = await call(config, tool_settings, {"name": "API_TOKEN"}, name="check_env")
    assert outcome.ok, outcome.error
    assert outcome.output == {"name": "API_TOKEN", "set": True}
    assert outcome.latency_ms > 0
    # The worker's own environment is not inherited, only the tool's env.
    os.environ["KEEL_TEST_LEAK"] = "1"
    try:
        outcome = await call(
            stdio_config(tool_name="env_status"), tool_settings, {"name": "KEEL_TEST_LEAK"}
        )
    finally:
        del os.environ["KEEL_TEST_LEAK"]
    assert outcome.output == {"name": "KEEL_TEST_LEAK", "set": False}


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_http_transports_call_the_tool(tool_settings: Settings, transport: Any) -> None:
    async with McpHttpService(transport=transport) as service:
        outcome = await call(
            service.config(
                headers={
                    "Authorization": {"value": encrypt("Bearer " + API_TOKEN, KEY), "secret": True},
                    "X-Plain": "visible",
                }
            ),
            tool_settings,
            {"text": "tides"},
        )
    assert outcome.ok, outcome.error
    # Structured content when the server gives it (MCPServer wraps a str as "result").
    assert outcome.output == {"result": "echo: tides"}
    assert service.tool_calls == {"echo": 1}
    assert all(h.get("authorization") == "Bearer " + API_TOKEN for h in service.headers)
    assert all(h.get("x-plain") == "visible" for h in service.headers)


async def test_probe_lists_tools_and_calls_when_given_arguments(tool_settings: Settings) -> None:
    listed = await probe_mcp("echo", stdio_config(), KEY, tool_settings)
    assert listed.ok, listed.error
    tools = {t["name"]: t for t in listed.tools}
    assert set(tools) == {"echo", "env_status", "fail", "slow", "big"}
    assert tools["echo"] == {
        "name": "echo",
        "description": "Echo the text back.",
        "input_schema": ECHO_SCHEMA,
    }
    assert listed.output is None

    called = await probe_mcp("echo", stdio_config(), KEY, tool_settings, {"text": "hi"})
    assert called.ok and called.output == {"result": "echo: hi"} and called.tools

    missing = await probe_mcp("lookup", stdio_config(), KEY, tool_settings)
    assert not missing.ok and missing.tools
    assert "offers no tool named 'lookup'" in (missing.error or "")
    assert "'echo'" in (missing.error or "") and "tool_name" in (missing.error or "")


# --- results -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["stdio", "streamable_http"])
async def test_is_error_result_is_a_failed_outcome_with_the_servers_message(
    tool_settings: Settings, where: str
) -> None:
    async with McpHttpService() as service:
        config = stdio_config() if where == "stdio" else service.config()
        outcome = await call(
            {**config, "tool_name": "fail"},
            tool_settings,
            {"reason": "no such city"},
            name="weather",
        )
    assert not outcome.ok and outcome.output is None
    # MCPServer puts its own words before the tool's.
    assert outcome.error == (
        "weather: the MCP tool 'fail' reported an error: "
        "Error executing tool fail: refused: no such city"
    )


async def test_invalid_arguments_never_reach_the_server(tool_settings: Settings) -> None:
    async with McpHttpService() as service:
        outcome = await call(service.config(), tool_settings, {"text": 5}, schema=ECHO_SCHEMA)
    assert not outcome.ok and "invalid arguments for echo" in (outcome.error or "")
    assert service.requests == 0


async def test_long_results_are_cut(tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite+aiosqlite:///unused.db", tmp_path, tool_max_response_chars=1000
    )
    outcome = await call(stdio_config(tool_name="big"), settings, {"size": 50_000})
    assert outcome.ok
    assert isinstance(outcome.output, str) and len(outcome.output) < 1100
    # The JSON text of the structured result, cut.
    assert outcome.output.startswith('{"result": "xxx')
    assert outcome.output.endswith("... [truncated 49014 characters]")
    short = await call(stdio_config(tool_name="big"), settings, {"size": 900})
    assert short.output == {"result": "x" * 900}


# --- stdio policy ---------------------------------------------------------------------


async def test_command_not_allowed_is_refused_and_does_not_run(
    tool_settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    config = {"transport": "stdio", "command": "/bin/sh", "args": ["-c", f"touch {marker}"]}
    outcome = await call(config, tool_settings, {"text": "x"})
    assert not outcome.ok and outcome.error is not None
    assert "command '/bin/sh' is not in KEEL_MCP_STDIO_ALLOWED" in outcome.error
    probed = await probe_mcp("echo", config, KEY, tool_settings)
    assert not probed.ok and "KEEL_MCP_STDIO_ALLOWED" in (probed.error or "")
    inline = await call(
        {
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-c", f"open({str(marker)!r}, 'w')"],
        },
        tool_settings,
        {},
    )
    assert inline.error is not None and "runs code given on its command line" in inline.error
    assert not marker.exists()


def test_stdio_is_disabled_until_an_operator_lists_exact_commands() -> None:
    assert "disabled" in (stdio_refusal("python3", ["server.py"], []) or "")
    allowed = ["/usr/bin/python3", "uvx"]
    assert stdio_refusal("/usr/bin/python3", ["server.py"], allowed) is None
    assert stdio_refusal("uvx", ["mcp-server-git"], allowed) is None
    # Compared exactly as written: another spelling of the same program is not listed.
    assert stdio_refusal("python3", ["server.py"], allowed) is not None
    assert stdio_refusal("/usr/bin/python3;rm", [], allowed) is not None
    assert stdio_refusal("", [], allowed) is not None


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("python3", ["-c", "print(1)"]),
        ("/usr/bin/python3.12", ["-Ic", "x"]),
        ("node", ["-e", "x"]),
        ("node", ["--eval=x"]),
        ("node", ["-pe", "x"]),
        ("deno", ["eval", "x"]),
        ("bash", ["-c", "x"]),
        ("sh", ["-ec", "x"]),
        ("pwsh", ["-Command", "x"]),
        ("ruby", ["-e", "x"]),
        ("perl", ["-e", "x"]),
        ("php", ["-r", "x"]),
        ("env", ["python3", "-c", "x"]),
        ("npx", ["-c", "x"]),
        ("uv", ["run", "python", "-c", "x"]),
    ],
)
def test_interpreters_with_inline_code_are_refused(command: str, args: list[str]) -> None:
    assert inline_code_argument(command, args) is not None
    assert "runs code given on its command line" in (stdio_refusal(command, args, [command]) or "")


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("python3", ["server.py"]),
        ("python3", ["-m", "mcp_server"]),
        ("python3", ["-u", "s.py"]),
        ("npx", ["-y", "@modelcontextprotocol/server-memory"]),
        ("uvx", ["mcp-server-git"]),
        ("/opt/mcp/server", ["-c", "config.toml"]),  # not an interpreter: -c is its own flag
    ],
)
def test_servers_with_their_own_arguments_pass(command: str, args: list[str]) -> None:
    assert inline_code_argument(command, args) is None


def test_allowed_setting_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    def allowed() -> list[str]:
        return Settings(_env_file=None).mcp_stdio_allowed  # type: ignore[call-arg]

    monkeypatch.delenv("KEEL_MCP_STDIO_ALLOWED", raising=False)
    assert allowed() == []
    monkeypatch.setenv("KEEL_MCP_STDIO_ALLOWED", " uvx, /opt/mcp/server ,, ")
    assert allowed() == ["uvx", "/opt/mcp/server"]


async def test_env_cannot_swap_the_program_or_inject_code(
    tool_settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "bin" / "python3"
    evil.parent.mkdir()
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    # "python3" is allowed; a PATH in the tool's env does not decide which one runs.
    allowed = tool_settings.model_copy(update={"mcp_stdio_allowed": ["python3"]})
    quiet = script(tmp_path, "pass")
    swapped = await call(
        {**quiet, "command": "python3", "env": sealed_env(PATH=str(evil.parent))},
        allowed,
        {"text": "x"},
    )
    assert swapped.error is not None and "exited or closed its output" in swapped.error
    assert not marker.exists()
    preload = await call(
        stdio_config(env=sealed_env(LD_PRELOAD="/tmp/x.so")), tool_settings, {"text": "x"}
    )
    assert preload.error == (
        "echo: config.env may not set LD_PRELOAD (it makes the server load other code)"
    )


# --- failures, classified ------------------------------------------------------------


async def test_server_process_that_exits_reports_its_stderr(tool_settings: Settings) -> None:
    config = stdio_config(
        "--crash", "cannot read /etc/weather.conf", env=sealed_env(API_TOKEN=API_TOKEN)
    )
    outcome = await call(config, tool_settings, {"text": "x"})
    assert not outcome.ok and outcome.error is not None
    assert "exited or closed its output while connecting" in outcome.error
    assert "its stderr ends with: cannot read /etc/weather.conf" in outcome.error


async def test_secrets_are_masked_in_what_a_failing_server_prints(
    tool_settings: Settings, tmp_path: Path
) -> None:
    config = {
        **script(
            tmp_path, "import os, sys; sys.stderr.write('bad token ' + os.environ['API_TOKEN'])"
        ),
        "env": sealed_env(API_TOKEN=API_TOKEN),
    }
    outcome = await probe_mcp("echo", config, KEY, tool_settings)
    assert not outcome.ok and outcome.error is not None
    assert "bad token ***" in outcome.error and API_TOKEN not in outcome.error


async def test_command_that_cannot_start(tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite+aiosqlite:///unused.db", tmp_path, mcp_stdio_allowed=["/nonexistent/mcp-server"]
    )
    outcome = await call(
        {"transport": "stdio", "command": "/nonexistent/mcp-server"}, settings, {"text": "x"}
    )
    assert outcome.error == (
        "echo: cannot start the stdio server '/nonexistent/mcp-server': No such file or directory"
    )


async def test_output_that_is_not_mcp_is_a_protocol_error(
    tool_settings: Settings, tmp_path: Path
) -> None:
    config = {
        **script(
            tmp_path, "import time; print('Welcome to my server!', flush=True); time.sleep(30)"
        ),
        "timeout_s": 1,
    }
    outcome = await call(config, tool_settings, {"text": "x"})
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.startswith("echo: MCP protocol error: no answer from the stdio server")
    assert "output that is not MCP" in outcome.error


async def test_an_endpoint_that_is_not_mcp_is_a_protocol_error(tool_settings: Settings) -> None:
    async with HttpToolService() as service:  # answers every POST with plain JSON
        url = service.url("mcp")
        streamable = await call(
            {"transport": "streamable_http", "url": url}, tool_settings, {"text": "x"}
        )
        sse = await call({"transport": "sse", "url": url}, tool_settings, {"text": "x"})
    assert streamable.error == (
        f"echo: MCP protocol error from {url} while connecting: Failed to parse JSON "
        "response: 11 validation errors for union[JSONRPCRequest,JSONRPCNotification,"
        "JSONRPCResponse,JSONRPCError] (code -32700)"
    )
    assert sse.error == (
        f"echo: MCP protocol error from {url} while connecting: Expected response with "
        "content type 'text/event-stream', got 'application/json'."
    )


async def test_refused_connection_is_retryable(tool_settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    for transport in ("streamable_http", "sse"):
        config = {"transport": transport, "url": url}
        refused = f"echo: connection refused by {re.escape(url)}"
        with pytest.raises(RetryableToolError, match=refused):
            await call(config, tool_settings, {"text": "x"})
        probed = await probe_mcp("echo", config, KEY, tool_settings)
        assert not probed.ok and probed.error == f"echo: connection refused by {url}"


async def test_5xx_is_retryable_and_the_next_call_succeeds(tool_settings: Settings) -> None:
    async with McpHttpService(fail_calls=1) as service:
        unavailable = f"echo: HTTP 503 from {re.escape(service.url)}"
        with pytest.raises(RetryableToolError, match=unavailable):
            await call(service.config(), tool_settings, {"text": "x"})
        outcome = await call(service.config(), tool_settings, {"text": "x"})
    assert outcome.ok and service.tool_calls == {"echo": 2}


async def test_wrong_path_is_an_http_status_error(tool_settings: Settings) -> None:
    async with McpHttpService() as service:
        url = service.url.replace("/mcp", "/nope")
        outcome = await call(
            {"transport": "streamable_http", "url": url}, tool_settings, {"text": "x"}
        )
        sse = await probe_mcp("echo", {"transport": "sse", "url": url}, KEY, tool_settings)
    assert outcome.error == (f"echo: HTTP 404 from {url}: the MCP endpoint refused the request")
    assert sse.error is not None and sse.error.startswith(f"echo: HTTP 404 from {url}")


async def test_tls_dns_and_blocked_destinations(tool_settings: Settings) -> None:
    async with McpHttpService() as service:
        tls = await probe_mcp(
            "echo",
            {"transport": "streamable_http", "url": service.url.replace("http:", "https:")},
            KEY,
            tool_settings,
        )
    assert tls.error is not None and tls.error.startswith("echo: TLS error talking to https://")
    dns = await probe_mcp(
        "echo", {"transport": "sse", "url": f"http://{UNRESOLVABLE_HOST}/sse"}, KEY, tool_settings
    )
    assert dns.error is not None
    assert dns.error.startswith(f"echo: DNS failure: cannot resolve host '{UNRESOLVABLE_HOST}'")
    blocked = await probe_mcp(
        "echo",
        {"transport": "streamable_http", "url": "http://169.254.169.254/mcp"},
        KEY,
        tool_settings,
    )
    assert blocked.error == (
        "echo: 169.254.169.254 is a cloud metadata address; requests "
        "there are blocked (set KEEL_TOOL_ALLOW_LINK_LOCAL=true to allow "
        "them)"
    )


# --- slow servers, cancellation and processes left behind ----------------------------


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_slow_http_server_times_out(tool_settings: Settings, transport: Any) -> None:
    async with McpHttpService(transport=transport, delay_s=30) as service:
        started = time.monotonic()
        outcome = await probe_mcp("echo", service.config(timeout_s=0.5), KEY, tool_settings)
        elapsed = time.monotonic() - started
        with pytest.raises(RetryableToolError, match=r"timed out after 0\.5s connecting"):
            await call(service.config(timeout_s=0.5), tool_settings, {"text": "x"})
    assert outcome.error == f"echo: timed out after 0.5s connecting ({service.url})"
    assert elapsed < 5


async def test_server_silent_while_connecting_times_out_and_is_stopped(
    tool_settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    silent = (
        "import os, pathlib, time; "
        f"pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid())); time.sleep(60)"
    )
    with pytest.raises(RetryableToolError, match=r"timed out after 3s connecting"):
        await call({**script(tmp_path, silent), "timeout_s": 3}, tool_settings, {})
    pid = int(pidfile.read_text())
    assert process_gone(pid)  # stopped (SIGTERM after the grace period) before returning


async def test_slow_tool_times_out_and_the_process_is_stopped(
    tool_settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    # Long enough for Python to start and import the SDK; far shorter than the nap.
    config = stdio_config(tool_name="slow", timeout_s=5, env=sealed_env(PIDFILE=str(pidfile)))
    with pytest.raises(RetryableToolError, match=r"timed out after 5s calling 'slow'"):
        await call(config, tool_settings, {"seconds": 60}, name="nap")
    pid = int(pidfile.read_text())

    async def gone() -> bool:
        return process_gone(pid)

    await wait_for(gone, timeout=10, what=f"MCP server process {pid} to exit")


async def test_cancel_propagates_and_stops_the_server(
    tool_settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    config = stdio_config(tool_name="slow", timeout_s=60, env=sealed_env(PIDFILE=str(pidfile)))
    task = asyncio.create_task(call(config, tool_settings, {"seconds": 60}))

    async def running() -> bool:
        return pidfile.exists() and bool(pidfile.read_text())

    await wait_for(running, timeout=20, what="the slow tool to start")
    pid = int(pidfile.read_text())
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = time.monotonic() - cancelled_at
    assert process_gone(pid)  # stopped before the cancel came back, not later
    assert took < 5, took
