"""Tools: what is special to them is their config (secret values sealed, shown masked),
the input schema an MCP server can tell, and the connection test."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import SessionDep, SettingsDep, WorkspaceDep
from api.errors import Conflict, Unprocessable, field_errors
from api.resources import Resource, refuse_if_published
from api.routes.resource import resource_router
from api.schemas.common import Envelope, error_responses, ok
from api.schemas.tools import (
    HttpToolConfig,
    McpToolConfig,
    ToolCreate,
    ToolOut,
    ToolTestRequest,
    ToolTestResult,
    ToolUpdate,
    parse_config,
)
from api.services.tools import discover_input_schema, try_connection
from infra.models import Agent, AgentTool, Tool
from infra.settings import Settings
from infra.tools.sealing import NoSecretToKeep, masked_config, seal_config


def _seal(config: HttpToolConfig | McpToolConfig, stored: dict[str, Any] | None,
          settings: Settings) -> dict[str, Any]:
    try:
        return seal_config(config.model_dump(mode="json"), stored, settings.secret_key)
    except NoSecretToKeep as exc:
        raise Unprocessable(str(exc), [{"loc": ["body", "config", exc.field, exc.key],
                                        "msg": "no stored secret to keep",
                                        "type": "secret_missing"}]) from exc


def _parse_config(tool_type: str, raw: Any) -> HttpToolConfig | McpToolConfig:
    try:
        return parse_config(tool_type, raw)
    except ValidationError as exc:
        errors = field_errors(list(exc.errors()))
        for e in errors:
            e["loc"] = ["body", "config", *e["loc"]]
        raise Unprocessable(f"invalid config for an {tool_type} tool: {errors[0]['msg']}",
                            errors) from exc


class Tools(Resource[Tool]):
    async def new(self, session: AsyncSession, workspace_id: int, body: ToolCreate,
                  settings: Settings) -> Tool:
        config = _seal(body.config, None, settings)
        input_schema = body.input_schema
        if input_schema is None:
            input_schema = await discover_input_schema(body.name, body.type, config, settings)
        return Tool(workspace_id=workspace_id, name=body.name, description=body.description,
                    type=body.type, input_schema=input_schema, config=config)

    async def columns(self, session: AsyncSession, item: Tool, sent: dict[str, Any],
                      settings: Settings) -> dict[str, Any]:
        """A config sent, or a new type, is validated against the type and sealed; secrets
        sent back as "***" keep their stored values. Without an input schema, an MCP
        tool whose name, type or config changed asks its server for one."""
        columns = dict(sent)
        tool_type = columns.get("type") or item.type
        if "config" in columns or tool_type != item.type:
            raw = columns["config"] if "config" in columns else masked_config(item.config)
            columns.update(config=_seal(_parse_config(tool_type, raw), item.config, settings),
                           type=tool_type)
        if sent.keys() & {"name", "type", "config", "input_schema"}:
            name, config = columns.get("name", item.name), columns.get("config", item.config)
            if columns.get("input_schema", item.input_schema) is None:
                columns["input_schema"] = await discover_input_schema(name, tool_type, config,
                                                                       settings)
        return columns

    async def check_deletable(self, session: AsyncSession, item: Tool) -> None:
        await refuse_if_published(session, "tool", item.id)
        agent = (await session.execute(
            select(Agent.id, Agent.name).join(AgentTool, AgentTool.agent_id == Agent.id)
            .where(AgentTool.tool_id == item.id).order_by(Agent.id).limit(1)
        )).first()
        if agent is not None:
            raise Conflict(
                f"tool {item.id} is still listed by agent {agent.id} ({agent.name!r}); "
                "remove it from the agent's tool_ids first",
                {"agent_id": agent.id},
            )


tools = Tools(Tool, "tool")
router = resource_router(
    tools, prefix="/api/v1/Tool", tag="Tool", out=ToolOut, create=ToolCreate,
    update=ToolUpdate, name_max_length=100,
    summaries={"update": "Update a tool (partial; secrets sent as \"***\" are kept)"})


@router.post("/{tool_id}/test", response_model=Envelope[ToolTestResult],
             summary="Test a tool: really connect (HTTP: make the request; MCP: list the "
                     "tools, and call the tool when arguments are given)",
             responses=error_responses(404))
async def try_tool(tool_id: int, session: SessionDep, settings: SettingsDep,
                   workspace_id: WorkspaceDep, body: ToolTestRequest | None = None
                   ) -> dict[str, Any]:
    """A failed connection is ``ok: false`` with the reason (DNS, refused, timeout, TLS,
    HTTP status, MCP protocol error), never an error status."""
    tool = await tools.get(session, tool_id, workspace_id)
    # Give the connection back to the pool: the test may wait on the network.
    await session.close()
    result = await try_connection(tool, body.arguments if body is not None else None, settings)
    return ok(result.model_dump(mode="json"))
