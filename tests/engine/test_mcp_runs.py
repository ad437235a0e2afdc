"""MCP tools inside workflow runs: real Temporal, worker, API and database; the MCP
servers are the edges (a stdio subprocess, a streamable-HTTP server on loopback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.logging import configure_logging
from tests.support.database import dump_database
from tests.support.engine import Platform
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.fake_mcp import McpHttpService, process_gone, stdio_config
from tests.support.graphs import chain, kinds
from tests.support.logs import remove_stderr_handlers
from tests.support.responses import data
from tests.support.waiting import wait_for
from workflows.events import EventType
from workflows.status import ExecutionStatus, NodeStatus

API_TOKEN = "run-env-token-0a9b8c7d6e"


async def mcp_tool(platform: Platform, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Save an MCP tool, then test it: nothing runs on save, and the test (an editor's
    explicit action) discovers its input schema and stores it."""
    tool = data(
        await platform.http.post(
            "/api/v1/Tool/", json={"name": name, "type": "mcp", "config": config}
        ),
        201,
    )
    assert tool["input_schema"] is None
    tested = data(await platform.http.post(f"/api/v1/Tool/{tool['id']}/test", json={}))
    assert tested["ok"], tested["error"]
    return data(await platform.http.get(f"/api/v1/Tool/{tool['id']}"))


async def test_tool_nodes_call_mcp_over_stdio_and_streamable_http(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    platform: Platform,
    db: AsyncEngine,
) -> None:
    # Every line from here, the worker's and the API's, ours and the libraries', through
    # the JSON handler into the stderr capsys captures (the platform started before it).
    configure_logging("INFO")
    caplog.set_level(logging.INFO)
    try:
        events, final, remote_calls = await run_mcp_tools(platform)
    finally:
        remove_stderr_handlers()
    logged = capsys.readouterr().err

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"] == {"result": "echo: tides"}
    outputs = {
        e["node_id"]: e["data"]["output"] for e in events if e["type"] == EventType.NODE_COMPLETED
    }
    assert outputs["local"] == {"name": "API_TOKEN", "set": True}  # the env reached it
    called = [e["data"] for e in events if e["type"] == EventType.TOOL_CALLED]
    assert [(c["tool"], c["ok"], c["attempts"]) for c in called] == [
        ("check_env", True, 1),
        ("echo", True, 1),
    ]
    assert remote_calls == {"echo": 1}

    seen = json.dumps([events, final, data(await platform.http.get("/api/v1/Tool/"))])
    dump = await dump_database(db)
    assert API_TOKEN not in seen
    assert API_TOKEN not in logged
    assert API_TOKEN not in caplog.text  # libraries' records, as they were logged
    assert API_TOKEN not in dump
    lines = [json.loads(text) for text in logged.splitlines() if text.startswith("{")]
    # The capture holds the worker's lines.
    assert [line["event"] for line in lines].count("mcp tool called") == 2


async def run_mcp_tools(
    platform: Platform,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, int]]:
    """An MCP tool over stdio, then one over streamable HTTP, in one run: its events, its
    final record, and the calls the remote server saw."""
    async with McpHttpService() as remote:
        local_tool = await mcp_tool(
            platform,
            "check_env",
            stdio_config(tool_name="env_status", env={"API_TOKEN": API_TOKEN}),
        )
        remote_tool = await mcp_tool(platform, "echo", remote.config())
        # Discovered from the servers when the tools were tested.
        assert local_tool["input_schema"]["required"] == ["name"]
        assert remote_tool["input_schema"]["required"] == ["text"]
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {
                        "id": "local",
                        "type": "tool",
                        "tool_id": local_tool["id"],
                        "arguments": {"name": "API_TOKEN"},
                    },
                    {
                        "id": "check",
                        "type": "condition",
                        "routes": [
                            {
                                "when": {
                                    "path": "nodes.local.output.set",
                                    "op": "eq",
                                    "value": True,
                                },
                                "to": "remote",
                            }
                        ],
                        "default": "END",
                    },
                    {
                        "id": "remote",
                        "type": "tool",
                        "tool_id": remote_tool["id"],
                        "arguments": {"text": "{{ input.q }}"},
                    },
                ],
                "edges": [
                    {"from": "START", "to": "local"},
                    {"from": "local", "to": "check"},
                    {"from": "remote", "to": "END"},
                ],
            }
        )
        execution = await platform.run(workflow_id, {"q": "tides"})
        events, code = await platform.watch(execution["id"])
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
        )
    assert code == 1000
    return events, final, remote.tool_calls


async def test_agent_calls_mcp_tools_each_as_its_own_activity(platform: Platform) -> None:
    async with (
        McpHttpService(fail_calls=1) as remote,
        FakeOpenAI(
            [
                Turn(
                    tool_calls=[
                        {"name": "check_env", "args": {"name": "API_TOKEN"}},
                        {"name": "echo", "args": {"text": "tides"}},
                    ]
                ),
                Turn(content="all set"),
            ]
        ) as llm,
    ):
        local = await mcp_tool(
            platform,
            "check_env",
            stdio_config(tool_name="env_status", env={"API_TOKEN": API_TOKEN}),
        )
        echo = await mcp_tool(platform, "echo", remote.config())
        agent = await platform.agent(
            "assistant",
            provider="openai",
            model="gpt-4o-mini",
            base_url=llm.base_url,
            api_key="sk-test-key-0000",
            tool_ids=[local["id"], echo["id"]],
        )
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {
                        "id": "agent",
                        "type": "agent",
                        "agent_id": agent,
                        "input": "go",
                        "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                    }
                ],
                "edges": chain("agent"),
            }
        )
        execution = await platform.run(workflow_id)
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
        )

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"] == "all set"
    # The model was offered the schemas discovered from the MCP servers.
    offered = {
        t["function"]["name"]: t["function"]["parameters"] for t in llm.requests[0]["body"]["tools"]
    }
    assert offered["check_env"]["required"] == ["name"]
    assert offered["echo"]["required"] == ["text"]
    # echo failed once (503) and was retried on its own: the model was asked only twice.
    assert len(llm.requests) == 2 and remote.tool_calls == {"echo": 2}
    results = [m["content"] for m in llm.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert [json.loads(r) for r in results] == [
        {"name": "API_TOKEN", "set": True},
        {"result": "echo: tides"},
    ]
    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    scheduled = "activity_task_scheduled_event_attributes"
    activity_ids = [
        getattr(e, scheduled).activity_id for e in history.events if e.HasField(scheduled)
    ]
    assert sorted(a for a in activity_ids if a.startswith("agent/")) == [
        "agent/1/llm/0",
        "agent/1/llm/1",
        "agent/1/tool/0/0",
        "agent/1/tool/0/1",
    ]
    assert API_TOKEN not in history.to_json()


async def test_retryable_mcp_failure_is_retried_by_temporal(platform: Platform) -> None:
    async with McpHttpService(fail_calls=1) as remote:
        tool = await mcp_tool(platform, "echo", remote.config())
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {
                        "id": "call",
                        "type": "tool",
                        "tool_id": tool["id"],
                        "arguments": {"text": "again"},
                        "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                    }
                ],
                "edges": chain("call"),
            }
        )
        execution = await platform.run(workflow_id)
        events, _ = await platform.watch(execution["id"])
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
        )

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert kinds(events) == [
        (EventType.EXECUTION_STARTED, None),
        (EventType.NODE_STARTED, "call"),
        (EventType.NODE_RETRYING, "call"),
        (EventType.TOOL_CALLED, "call"),
        (EventType.NODE_COMPLETED, "call"),
        (EventType.EXECUTION_COMPLETED, None),
    ]
    retrying = events[2]["data"]
    assert retrying["attempt"] == 2
    assert (
        retrying["error"] == f"echo: HTTP 503 from {remote.url}: the MCP endpoint "
        "refused the request"
    )
    assert final["nodes"][0]["attempts"] == 2
    assert final["output"] == {"result": "echo: again"}
    assert remote.tool_calls == {"echo": 2}


async def test_mcp_tool_error_fails_the_node_without_retrying(platform: Platform) -> None:
    tool = await mcp_tool(platform, "weather", stdio_config(tool_name="fail"))
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {
                    "id": "ask",
                    "type": "tool",
                    "tool_id": tool["id"],
                    "arguments": {"reason": "no such city"},
                    "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                }
            ],
            "edges": chain("ask"),
        }
    )
    execution = await platform.run(workflow_id)
    final = await platform.wait_status(execution["id"], "failed")
    assert final["error"].endswith(
        "weather: the MCP tool 'fail' reported an error: "
        "Error executing tool fail: refused: no such city"
    )
    assert final["nodes"][0]["attempts"] == 1


async def test_cancelling_the_run_stops_the_stdio_server(
    platform: Platform, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    tool = await mcp_tool(
        platform,
        "nap",
        stdio_config(tool_name="slow", timeout_s=120, env={"PIDFILE": str(pidfile)}),
    )
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "nap", "type": "tool", "tool_id": tool["id"], "arguments": {"seconds": 120}}
            ],
            "edges": chain("nap"),
        }
    )
    execution = await platform.run(workflow_id)

    async def napping() -> bool:
        return pidfile.exists() and bool(pidfile.read_text())

    await wait_for(napping, timeout=30, what="the MCP tool to start")
    pid = int(pidfile.read_text())
    response = await platform.http.post(f"/api/v1/Execution/{execution['id']}/cancel")
    assert response.status_code == 200, response.text
    final = await platform.wait_status(execution["id"], "cancelled")
    assert final["nodes"][0]["status"] == NodeStatus.CANCELLED

    async def stopped() -> bool:
        return process_gone(pid)

    await wait_for(stopped, timeout=15, what=f"MCP server process {pid} to exit")
