"""What the API asks of a tool's server: the connection test, and the input schema an
MCP server lists."""

from __future__ import annotations

import time
import uuid
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from api.schemas.tools import ToolTestResult
from infra.logging import get_logger
from infra.models import Tool
from infra.settings import Settings
from infra.tools.common import RetryableToolError, ToolOutcome
from infra.tools.http import call_http
from infra.tools.mcp import probe_mcp

log = get_logger("keel.api.tools")


def discovered_schema(tool: Tool, listed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The input schema an MCP server listed for ``tool`` (``config.tool_name``, else the
    tool's name) when it is a valid JSON Schema of an object; else None."""
    if tool.type != "mcp":
        return None
    target = tool.config.get("tool_name") or tool.name
    found = next((t for t in listed if t.get("name") == target), None)
    schema = found.get("input_schema") if found else None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return None
    log.info("mcp tool input_schema discovered", tool_id=tool.id)
    return schema


async def try_connection(
    tool: Tool, arguments: dict[str, Any] | None, settings: Settings
) -> ToolTestResult:
    """Really connect (HTTP: make the request; MCP: list the tools, and call the tool when
    ``arguments`` are given). A failed connection is ``ok: false`` with the reason (DNS,
    refused, timeout, TLS, HTTP status, MCP protocol error), never an exception.

    ``tool`` may be detached from its session: only its loaded columns are read."""
    name, tool_type, config, schema = tool.name, tool.type, dict(tool.config), tool.input_schema
    started = time.perf_counter()
    try:
        if tool_type == "mcp":
            outcome = await probe_mcp(name, config, settings.secret_key, settings, arguments)
        else:
            # Without arguments the request goes out with {} (the schema is not checked):
            # the question is whether the service answers.
            outcome = await call_http(
                name,
                config,
                schema if arguments is not None else None,
                arguments or {},
                f"test-{uuid.uuid4().hex}",
                settings.secret_key,
                settings,
            )
    except RetryableToolError as exc:
        outcome = ToolOutcome(ok=False, error=str(exc))
    except Exception as exc:
        log.exception("tool test failed unexpectedly", tool_id=tool.id)
        outcome = ToolOutcome(ok=False, error=f"{name}: unexpected error: {type(exc).__name__}")
    latency_ms = outcome.latency_ms or (time.perf_counter() - started) * 1000
    log.info(
        "tool tested",
        tool_id=tool.id,
        type=tool_type,
        ok=outcome.ok,
        latency_ms=round(latency_ms, 1),
        error=outcome.error,
    )
    return ToolTestResult(
        ok=outcome.ok,
        latency_ms=latency_ms,
        tools=outcome.tools,
        result=outcome.output,
        error=outcome.error,
    )
