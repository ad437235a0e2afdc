"""POST /Tool/{id}/test really connects, and MCP tools saved without input_schema get
the one their server lists. Servers are real and on loopback: the HTTP tool service,
the stdio MCP server (a subprocess) and MCP servers over streamable HTTP and SSE."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.database import dump_database
from tests.support.fake_http import Behaviour, HttpToolService
from tests.support.fake_mcp import McpHttpService, stdio_config
from tests.support.logs import remove_stderr_handlers
from tests.support.net import UNRESOLVABLE_HOST, free_port
from tests.support.responses import data, error
from tests.support.settings import app_client

URL = "/api/v1/Tool/"
API_TOKEN = "mcp-env-token-8c7b6a5f4e"
HEADER_TOKEN = "Bearer hdr-token-1a2b3c4d5e"
ECHO_SCHEMA = {
    "type": "object",
    "properties": {"text": {"title": "Text", "type": "string"}},
    "required": ["text"],
    "title": "echoArguments",
}


async def create(
    client: httpx.AsyncClient, name: str, tool_type: str, config: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    return data(
        await client.post(URL, json={"name": name, "type": tool_type, "config": config, **fields}),
        201,
    )


async def run_test(
    client: httpx.AsyncClient, tool_id: int, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await (
        client.post(f"{URL}{tool_id}/test", json=body)
        if body is not None
        else client.post(f"{URL}{tool_id}/test")
    )
    result = data(response)
    assert set(result) == {"ok", "latency_ms", "tools", "result", "error"}
    assert result["latency_ms"] >= 0
    assert (result["error"] is None) == result["ok"], result
    return result


# --- HTTP tools ----------------------------------------------------------------------


async def test_http_tool_up(client: httpx.AsyncClient) -> None:
    async with HttpToolService() as service:
        tool = await create(
            client,
            "lookup",
            "http",
            {"url": service.url("lookup")},
            input_schema={"type": "object", "required": ["q"]},
        )
        # No arguments: the request goes out with {} (whatever the schema says).
        bare = await run_test(client, tool["id"])
        given = await run_test(client, tool["id"], {"arguments": {"q": "tides"}})
        invalid = await run_test(client, tool["id"], {"arguments": {"x": 1}})
    assert bare == {
        "ok": True,
        "latency_ms": bare["latency_ms"],
        "tools": [],
        "error": None,
        "result": {"status": 200, "body": {"echo": {}, "tool": "lookup"}},
    }
    assert bare["latency_ms"] > 0
    assert given["result"]["body"]["echo"] == {"q": "tides"}
    assert [r["body"] for r in service.requests] == [{}, {"q": "tides"}]
    assert service.requests[0]["idempotency_key"] != service.requests[1]["idempotency_key"]
    assert not invalid["ok"] and "invalid arguments for lookup" in invalid["error"]


async def test_http_tool_down_slow_and_refusing(client: httpx.AsyncClient) -> None:
    down_url = f"http://127.0.0.1:{free_port()}/lookup"
    down = await create(client, "down", "http", {"url": down_url})
    result = await run_test(client, down["id"])
    assert result == {
        "ok": False,
        "latency_ms": result["latency_ms"],
        "tools": [],
        "result": None,
        "error": f"down: connection refused by {down_url}",
    }

    async with McpHttpService(delay_s=30) as slow_server:
        slow = await create(client, "slow", "http", {"url": slow_server.url, "timeout_s": 0.5})
        started = time.monotonic()
        result = await run_test(client, slow["id"])
        assert time.monotonic() - started < 5
    assert result["error"] == f"slow: timed out after 0.5s talking to {slow_server.url}"

    async with HttpToolService() as service:
        service.behaviours["gone"] = Behaviour(status=404, body={"error": "no route"})
        service.behaviours["broken"] = Behaviour(fail_times=9)
        gone = await create(client, "gone", "http", {"url": service.url("gone")})
        broken = await create(client, "broken", "http", {"url": service.url("broken")})
        tls = await create(
            client, "tls", "http", {"url": service.url("x").replace("http:", "https:")}
        )
        gone_result = await run_test(client, gone["id"])
        broken_result = await run_test(client, broken["id"])
        tls_result = await run_test(client, tls["id"])
    assert gone_result["result"] == {"status": 404, "body": {"error": "no route"}}
    assert gone_result["error"].startswith(f"gone: HTTP 404 from {service.url('gone')}")
    assert broken_result["error"] == f"broken: HTTP 500 from {service.url('broken')}"
    assert tls_result["error"].startswith("tls: TLS error talking to https://127.0.0.1:")

    dns = await create(client, "dns", "http", {"url": f"http://{UNRESOLVABLE_HOST}/x"})
    assert (await run_test(client, dns["id"]))["error"].startswith(
        f"dns: DNS failure: cannot resolve host '{UNRESOLVABLE_HOST}'"
    )


async def test_link_local_is_blocked_without_a_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with HttpToolService() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        tool = await create(
            client, "metadata", "http", {"url": "http://169.254.169.254/latest", "method": "GET"}
        )
        result = await run_test(client, tool["id"])
    assert result["error"] == (
        "metadata: 169.254.169.254 is a cloud metadata address; requests there are blocked "
        "(set KEEL_TOOL_ALLOW_LINK_LOCAL=true to allow them)"
    )
    assert proxy.calls == {}


# --- MCP tools -----------------------------------------------------------------------


async def test_mcp_stdio_up_lists_tools_and_calls_with_arguments(client: httpx.AsyncClient) -> None:
    tool = await create(client, "echo", "mcp", stdio_config())
    listed = await run_test(client, tool["id"])
    assert listed["ok"] and listed["result"] is None
    assert [t["name"] for t in listed["tools"]] == ["echo", "env_status", "fail", "slow", "big"]
    assert listed["tools"][0] == {
        "name": "echo",
        "description": "Echo the text back.",
        "input_schema": ECHO_SCHEMA,
    }
    called = await run_test(client, tool["id"], {"arguments": {"text": "hi"}})
    assert called["ok"] and called["result"] == {"result": "echo: hi"} and called["tools"]


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_mcp_over_http_up_down_and_slow(client: httpx.AsyncClient, transport: Any) -> None:
    async with McpHttpService(transport=transport) as service:
        up = await create(client, "echo", "mcp", service.config())
        result = await run_test(client, up["id"], {"arguments": {"text": "x"}})
    assert result["ok"] and result["result"] == {"result": "echo: x"}
    assert {t["name"] for t in result["tools"]} == {"echo", "fail", "big"}

    # The server is gone now: refused.
    down = await run_test(client, up["id"])
    assert down == {
        "ok": False,
        "latency_ms": down["latency_ms"],
        "tools": [],
        "result": None,
        "error": f"echo: connection refused by {service.url}",
    }

    async with McpHttpService(transport=transport, delay_s=30) as slow_server:
        slow = await create(
            client, "slow_echo", "mcp", slow_server.config(tool_name="echo", timeout_s=0.5)
        )
        started = time.monotonic()
        result = await run_test(client, slow["id"])
        assert time.monotonic() - started < 5
    assert result["error"] == f"slow_echo: timed out after 0.5s connecting ({slow_server.url})"


async def test_mcp_failures_are_reasons_not_500s(client: httpx.AsyncClient) -> None:
    not_allowed = await create(
        client, "shell", "mcp", {"transport": "stdio", "command": "/bin/sh", "args": ["serve.sh"]}
    )
    assert not_allowed["input_schema"] is None  # saved (an operator may list it later)
    result = await run_test(client, not_allowed["id"])
    assert result["error"].startswith("shell: command '/bin/sh' is not in KEEL_MCP_STDIO_ALLOWED")

    is_error = await create(client, "weather", "mcp", stdio_config(tool_name="fail"))
    result = await run_test(client, is_error["id"], {"arguments": {"reason": "no city"}})
    assert not result["ok"] and result["tools"]
    assert result["error"] == (
        "weather: the MCP tool 'fail' reported an error: "
        "Error executing tool fail: refused: no city"
    )

    crash = await create(client, "crash", "mcp", stdio_config("--crash", "bad config"))
    result = await run_test(client, crash["id"])
    assert "exited or closed its output" in result["error"]
    assert result["error"].endswith("its stderr ends with: bad config")

    async with McpHttpService() as service:
        wrong = await create(
            client, "wrong", "mcp", {"transport": "streamable_http", "url": service.url + "/nope"}
        )
        missing = await create(client, "missing", "mcp", service.config())
        wrong_result = await run_test(client, wrong["id"])
        missing_result = await run_test(client, missing["id"])
    assert wrong_result["error"].startswith(f"wrong: HTTP 404 from {service.url}/nope")
    assert missing_result["error"].startswith(
        "missing: the MCP server offers no tool named 'missing'"
    )


async def test_unknown_tool_and_bad_bodies(client: httpx.AsyncClient) -> None:
    body = error(await client.post(f"{URL}999/test"), 404)
    assert body["msg"] == "tool 999 does not exist"
    error(await client.post(f"{URL}0/test", json={"arguments": {}}), 404)
    tool = await create(client, "echo", "mcp", stdio_config())
    bad = error(await client.post(f"{URL}{tool['id']}/test", json={"args": {}}), 422)
    assert bad["data"][0]["loc"] == ["body", "args"]
    error(await client.post(f"{URL}{tool['id']}/test", json={"arguments": [1]}), 422)


# --- discovery -----------------------------------------------------------------------


async def test_nothing_runs_on_save_and_test_discovers_the_schema(
    client: httpx.AsyncClient,
) -> None:
    async with McpHttpService(transport="sse") as service:
        remote = await create(client, "big", "mcp", service.config())
        assert remote["input_schema"] is None and service.requests == 0  # not contacted
        assert (await run_test(client, remote["id"]))["ok"]
        found = data(await client.get(f"{URL}{remote['id']}"))
    assert found["input_schema"]["required"] == ["size"]
    by_name = await create(client, "echo", "mcp", stdio_config())
    assert by_name["input_schema"] is None
    await run_test(client, by_name["id"])
    assert data(await client.get(f"{URL}{by_name['id']}"))["input_schema"] == ECHO_SCHEMA
    by_tool_name = await create(client, "check_env", "mcp", stdio_config(tool_name="env_status"))
    await run_test(client, by_tool_name["id"])
    assert data(await client.get(f"{URL}{by_tool_name['id']}"))["input_schema"]["required"] == [
        "name"
    ]
    given = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 9}}}
    kept = await create(client, "echo2", "mcp", stdio_config(tool_name="echo"), input_schema=given)
    await run_test(client, kept["id"])
    assert data(await client.get(f"{URL}{kept['id']}"))["input_schema"] == given
    unknown = await create(client, "nosuch", "mcp", stdio_config())
    await run_test(client, unknown["id"])
    assert data(await client.get(f"{URL}{unknown['id']}"))["input_schema"] is None


# --- secrets -------------------------------------------------------------------------


async def test_secrets_reach_the_server_and_nothing_else(
    settings: Settings,
    db: AsyncEngine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    crasher = tmp_path / "crash.py"
    crasher.write_text(
        "import os, sys; sys.stderr.write('token ' + os.environ['API_TOKEN']); sys.exit(1)"
    )
    leak = {**stdio_config(env={"API_TOKEN": API_TOKEN}), "args": [str(crasher)]}
    responses: list[str] = []
    try:
        async with app_client(settings) as client, HttpToolService() as service:
            env_tool = await create(
                client,
                "check_env",
                "mcp",
                stdio_config(tool_name="env_status", env={"API_TOKEN": API_TOKEN}),
            )
            result = await run_test(client, env_tool["id"], {"arguments": {"name": "API_TOKEN"}})
            assert result["result"] == {"name": "API_TOKEN", "set": True}
            responses.append(json.dumps(env_tool) + json.dumps(result))
            crash = await create(client, "crash", "mcp", {**leak, "command": sys.executable})
            crashed = await run_test(client, crash["id"])
            assert crashed["error"].endswith("its stderr ends with: token ***")
            responses.append(json.dumps(crash) + json.dumps(crashed))
            service.behaviours["mirror"] = Behaviour(body={"saw": HEADER_TOKEN})
            mirror = await create(
                client,
                "mirror",
                "http",
                {
                    "url": service.url("mirror"),
                    "headers": {"Authorization": {"value": HEADER_TOKEN, "secret": True}},
                },
            )
            mirrored = await run_test(client, mirror["id"])
            assert mirrored["result"] == {"status": 200, "body": {"saw": "***"}}
            assert service.requests[-1]["headers"]["authorization"] == HEADER_TOKEN
            responses.append(json.dumps(mirrored))
            responses.append((await client.get(URL)).text)
    finally:
        remove_stderr_handlers()
    output = capsys.readouterr().err
    assert '"event": "tool tested"' in output  # the capture holds this test's log
    dump = await dump_database(db)
    for secret in (API_TOKEN, HEADER_TOKEN, "hdr-token-1a2b3c4d5e"):
        assert all(secret not in text for text in responses)
        assert secret not in output
        assert secret not in caplog.text
        assert secret not in dump
