from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError
from sqlalchemy import select

from api.crud import (
    commit_unique,
    contains,
    ensure_name_free,
    get_or_404,
    paginate,
    refuse_if_published,
)
from api.deps import PageDep, SessionDep, SettingsDep, WorkspaceDep
from api.errors import Conflict, Unprocessable, field_errors
from api.schemas.common import Envelope, Page, error_responses, ok
from api.schemas.tools import (
    SECRET_MASK,
    HttpToolConfig,
    McpToolConfig,
    SecretValue,
    ToolCreate,
    ToolOut,
    ToolTestRequest,
    ToolTestResult,
    ToolUpdate,
    parse_config,
)
from infra.logging import get_logger
from infra.models import Agent, AgentTool, Tool
from infra.secrets import encrypt
from infra.settings import Settings
from infra.tools.common import RetryableToolError, ToolOutcome
from infra.tools.http import call_http
from infra.tools.mcp import probe_mcp

router = APIRouter(prefix="/api/v1/Tool", tags=["Tool"], responses=error_responses(422))
log = get_logger("keel.api.tools")

# Config maps whose values may be secret. MCP env values are always secret.
SECRET_MAPS = ("headers", "env")


def _seal(config: HttpToolConfig | McpToolConfig, previous: dict[str, Any] | None,
          secret_key: str) -> dict[str, Any]:
    """Config as stored: secret values encrypted; a value sent back as "***" keeps the old one."""
    stored = config.model_dump(mode="json")
    for field in SECRET_MAPS:
        if field not in stored:
            continue
        old = (previous or {}).get(field, {})
        sealed: dict[str, Any] = {}
        for key, value in getattr(config, field).items():
            raw = value.value if isinstance(value, SecretValue) else value
            if raw == SECRET_MASK:
                # The mask as read back (even as a bare "***"): keep what is stored.
                if not isinstance(old.get(key), dict):
                    raise Unprocessable(
                        f"config.{field}.{key} is \"***\" but no secret is stored under that "
                        "name; send the real value",
                        [{"loc": ["body", "config", field, key], "msg": "no stored secret to keep",
                          "type": "secret_missing"}],
                    )
                sealed[key] = old[key]
            elif field == "env" or (isinstance(value, SecretValue) and value.secret):
                sealed[key] = {"value": encrypt(raw, secret_key), "secret": True}
            else:
                sealed[key] = raw
        stored[field] = sealed
    return stored


def masked_config(stored: dict[str, Any]) -> dict[str, Any]:
    shown = dict(stored)
    for field in SECRET_MAPS:
        if field in shown:
            shown[field] = {
                k: {"value": SECRET_MASK, "secret": True} if isinstance(v, dict) else v
                for k, v in shown[field].items()
            }
    return shown


def render(tool: Tool) -> ToolOut:
    return ToolOut(
        id=tool.id,
        name=tool.name,
        description=tool.description,
        type=tool.type,
        input_schema=tool.input_schema,
        config=masked_config(tool.config),
        created_at=tool.created_at,
        updated_at=tool.updated_at,
    )


@router.post("/", status_code=201, response_model=Envelope[ToolOut], summary="Create a tool",
             responses=error_responses(409))
async def create_tool(body: ToolCreate, session: SessionDep, settings: SettingsDep,
                      workspace_id: WorkspaceDep) -> dict[str, Any]:
    await ensure_name_free(session, Tool, workspace_id, body.name, "a tool")
    config = _seal(body.config, None, settings.secret_key)
    input_schema = body.input_schema
    if input_schema is None:
        input_schema = await discover_input_schema(body.name, body.type, config, settings)
    tool = Tool(
        workspace_id=workspace_id,
        name=body.name,
        description=body.description,
        type=body.type,
        input_schema=input_schema,
        config=config,
    )
    session.add(tool)
    await commit_unique(session, f"a tool named {body.name!r} already exists")
    return ok(render(tool))


@router.get("/", response_model=Envelope[Page[ToolOut]], summary="List tools")
async def list_tools(session: SessionDep, workspace_id: WorkspaceDep, page: PageDep,
                     q: Annotated[str | None, Query(max_length=100,
                                                    description="Name contains.")] = None
                     ) -> dict[str, Any]:
    stmt = select(Tool).where(Tool.workspace_id == workspace_id).order_by(Tool.id)
    if q:
        stmt = stmt.where(contains(Tool.name, q))
    return ok(await paginate(session, stmt, page, render))


@router.get("/{tool_id}", response_model=Envelope[ToolOut], summary="Get a tool",
            responses=error_responses(404))
async def get_tool(tool_id: int, session: SessionDep, workspace_id: WorkspaceDep
                   ) -> dict[str, Any]:
    return ok(render(await get_or_404(session, Tool, tool_id, workspace_id, "tool")))


@router.put("/{tool_id}", response_model=Envelope[ToolOut],
            summary="Update a tool (partial; secrets sent as \"***\" are kept)",
            responses=error_responses(404, 409))
async def update_tool(tool_id: int, body: ToolUpdate, session: SessionDep,
                      settings: SettingsDep, workspace_id: WorkspaceDep) -> dict[str, Any]:
    tool = await get_or_404(session, Tool, tool_id, workspace_id, "tool")
    sent = body.model_fields_set
    nulls = [f for f in sent & {"name", "description", "type", "config"}
             if getattr(body, f) is None]
    if nulls:
        raise Unprocessable(f"{nulls[0]} cannot be null",
                            [{"loc": ["body", f], "msg": "cannot be null", "type": "null"}
                             for f in nulls])
    if "name" in sent and body.name != tool.name:
        await ensure_name_free(session, Tool, workspace_id, body.name or "", "a tool",
                               exclude_id=tool.id)
    new_type = body.type or tool.type
    if body.config is not None or new_type != tool.type:
        raw = body.config if body.config is not None else masked_config(tool.config)
        try:
            config = parse_config(new_type, raw)
        except ValidationError as exc:
            errors = field_errors(list(exc.errors()))
            for e in errors:
                e["loc"] = ["body", "config", *e["loc"]]
            raise Unprocessable(f"invalid config for an {new_type} tool: {errors[0]['msg']}",
                                errors) from exc
        tool.config = _seal(config, tool.config, settings.secret_key)
        tool.type = new_type
    for field in ("name", "description", "input_schema"):
        if field in sent:
            setattr(tool, field, getattr(body, field))
    if tool.input_schema is None and sent & {"name", "type", "config", "input_schema"}:
        tool.input_schema = await discover_input_schema(tool.name, tool.type, tool.config,
                                                        settings)
    await commit_unique(session, f"a tool named {tool.name!r} already exists")
    await session.refresh(tool)
    return ok(render(tool))


@router.delete("/{tool_id}", response_model=Envelope[None], summary="Delete a tool",
               responses=error_responses(404, 409))
async def delete_tool(tool_id: int, session: SessionDep, workspace_id: WorkspaceDep
                      ) -> dict[str, Any]:
    tool = await get_or_404(session, Tool, tool_id, workspace_id, "tool")
    await refuse_if_published(session, "tool", tool.id)
    agent = (await session.execute(
        select(Agent.id, Agent.name).join(AgentTool, AgentTool.agent_id == Agent.id)
        .where(AgentTool.tool_id == tool.id).order_by(Agent.id).limit(1)
    )).first()
    if agent is not None:
        raise Conflict(
            f"tool {tool.id} is still listed by agent {agent.id} ({agent.name!r}); "
            "remove it from the agent's tool_ids first",
            {"agent_id": agent.id},
        )
    await session.delete(tool)
    await session.commit()
    return ok(None)


async def discover_input_schema(name: str, tool_type: str, config: dict[str, Any],
                                settings: Settings) -> dict[str, Any] | None:
    """For an MCP tool saved without input_schema: the schema its server lists for it
    (``config.tool_name``, else the tool's name), if the server answers within
    ``KEEL_MCP_DISCOVERY_TIMEOUT_S`` (or the tool's timeout_s, if shorter). Otherwise
    None, and the tool is saved without one: discovery never fails a save."""
    if tool_type != "mcp" or settings.mcp_discovery_timeout_s <= 0:
        return None
    timeout_s = min(settings.mcp_discovery_timeout_s,
                    float(config.get("timeout_s") or settings.mcp_timeout_s))
    target = config.get("tool_name") or name
    try:
        # Each step is bounded by timeout_s; this bounds them together.
        async with asyncio.timeout(timeout_s * 2):
            outcome = await probe_mcp(name, config, settings.secret_key, settings,
                                      timeout_s=timeout_s)
    except TimeoutError:
        outcome = ToolOutcome(ok=False, error=f"no answer within {timeout_s * 2:g}s")
    found = next((t for t in outcome.tools if t["name"] == target), None)
    schema = found.get("input_schema") if found else None
    if isinstance(schema, dict):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError:
            schema = None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        log.info("mcp tool saved without input_schema: discovery found none", tool=name,
                 error=outcome.error)
        return None
    log.info("mcp tool input_schema discovered", tool=name)
    return schema


@router.post("/{tool_id}/test", response_model=Envelope[ToolTestResult],
             summary="Test a tool: really connect (HTTP: make the request; MCP: list the "
                     "tools, and call the tool when arguments are given)",
             responses=error_responses(404))
async def try_tool(tool_id: int, session: SessionDep, settings: SettingsDep,
                   workspace_id: WorkspaceDep, body: ToolTestRequest | None = None
                   ) -> dict[str, Any]:
    """A failed connection is ``ok: false`` with the reason (DNS, refused, timeout, TLS,
    HTTP status, MCP protocol error), never an error status."""
    tool = await get_or_404(session, Tool, tool_id, workspace_id, "tool")
    name, tool_type, config, schema = tool.name, tool.type, dict(tool.config), tool.input_schema
    # Give the connection back to the pool: the test may wait on the network.
    await session.close()
    arguments = body.arguments if body is not None else None
    started = time.perf_counter()
    try:
        if tool_type == "mcp":
            outcome = await probe_mcp(name, config, settings.secret_key, settings, arguments)
        else:
            # Without arguments the request goes out with {} (the schema is not checked):
            # the question is whether the service answers.
            outcome = await call_http(name, config, schema if arguments is not None else None,
                                      arguments or {}, f"test-{uuid.uuid4().hex}",
                                      settings.secret_key, settings)
    except RetryableToolError as exc:
        outcome = ToolOutcome(ok=False, error=str(exc))
    except Exception as exc:
        log.exception("tool test failed unexpectedly", tool_id=tool_id)
        outcome = ToolOutcome(ok=False, error=f"{name}: unexpected error: {type(exc).__name__}")
    latency_ms = outcome.latency_ms or (time.perf_counter() - started) * 1000
    log.info("tool tested", tool_id=tool_id, type=tool_type, ok=outcome.ok,
             latency_ms=round(latency_ms, 1), error=outcome.error)
    return ok(ToolTestResult(ok=outcome.ok, latency_ms=latency_ms, tools=outcome.tools,
                             result=outcome.output, error=outcome.error).model_dump(mode="json"))
