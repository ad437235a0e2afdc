"""Tools: what is special to them is their config (secret values sealed, shown masked),
the input schema an MCP server can tell, and the connection test."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Editor
from api.errors import Conflict, Forbidden, Unprocessable, field_errors
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
from api.services.tools import discovered_schema, try_connection
from infra.accounts import Caller
from infra.models import Agent, AgentTool, Tool
from infra.security.roles import Role
from infra.settings import Settings
from infra.tools.sealing import (
    NoSecretToKeep,
    destination,
    masked_config,
    move_url_credentials,
    seal_config,
)
from infra.tools.stdio_policy import stdio_refusal


def _seal(
    config: HttpToolConfig | McpToolConfig, stored: dict[str, Any] | None, settings: Settings
) -> dict[str, Any]:
    """The config as stored: user-info moved to a header, secrets sealed, "***" keeping
    the stored value only while the destination (url, command, args) stays the same."""
    try:
        sent = move_url_credentials(config.model_dump(mode="json"))
    except ValueError as exc:
        raise Unprocessable(
            f"invalid config: {exc}",
            [{"loc": ["body", "config", "url"], "msg": str(exc), "type": "credentials_twice"}],
        ) from exc
    repointed = stored is not None and destination(sent) != destination(stored)
    try:
        return seal_config(sent, None if repointed else stored, settings.secret_key)
    except NoSecretToKeep as exc:
        msg = str(exc)
        if repointed:
            msg = (
                f"the tool's destination (url, command or args) changed, so its stored "
                f"secrets are not kept (they would go to the new destination): send "
                f"config.{exc.field}.{exc.key} again, or leave it out"
            )
        raise Unprocessable(
            msg,
            [
                {
                    "loc": ["body", "config", exc.field, exc.key],
                    "msg": "no stored secret to keep",
                    "type": "secret_missing",
                }
            ],
        ) from exc


def _check_stdio(config: HttpToolConfig | McpToolConfig, settings: Settings) -> None:
    """Refuse at save what can never run: stdio while the server disables it, and an
    interpreter given inline code. Whether the command is listed is checked when it
    starts (an operator may list it later)."""
    if not isinstance(config, McpToolConfig) or config.transport != "stdio":
        return
    command = config.command or ""
    listed = settings.mcp_stdio_allowed and [command]
    refusal = stdio_refusal(command, config.args, listed or [])
    if refusal is not None:
        raise Unprocessable(
            refusal,
            [{"loc": ["body", "config", "command"], "msg": refusal, "type": "command_not_allowed"}],
        )


def _parse_config(tool_type: str, raw: Any) -> HttpToolConfig | McpToolConfig:
    try:
        return parse_config(tool_type, raw)
    except ValidationError as exc:
        errors = field_errors(list(exc.errors()))
        for e in errors:
            e["loc"] = ["body", "config", *e["loc"]]
        raise Unprocessable(
            f"invalid config for an {tool_type} tool: {errors[0]['msg']}", errors
        ) from exc


def _is_stdio(config: Any) -> bool:
    if isinstance(config, McpToolConfig):
        return config.transport == "stdio"
    return isinstance(config, dict) and config.get("transport") == "stdio"


class Tools(Resource[Tool]):
    """Nothing runs when a tool is saved: an MCP tool without input_schema gets the one
    its server lists at ``POST /Tool/{id}/test``, an editor's explicit action."""

    summaries = {"update": 'Update a tool (partial; secrets sent as "***" are kept)'}

    def authorize(self, caller: Caller, item: Tool | None, sent: dict[str, Any]) -> None:
        """MCP stdio tools run a command on the worker's host: admins only."""
        if (
            (item is not None and _is_stdio(item.config)) or _is_stdio(sent.get("config"))
        ) and not caller.may(Role.ADMIN):
            raise Forbidden(
                "MCP stdio tools run a command on the worker's host: creating "
                "or changing one needs the admin role; your role in workspace "
                f"{caller.workspace_id} is {caller.role.value}"
            )

    async def new(
        self, session: AsyncSession, workspace_id: int, body: ToolCreate, settings: Settings
    ) -> Tool:
        _check_stdio(body.config, settings)
        return Tool(
            workspace_id=workspace_id,
            name=body.name,
            description=body.description,
            type=body.type,
            input_schema=body.input_schema,
            config=_seal(body.config, None, settings),
        )

    async def columns(
        self, session: AsyncSession, item: Tool, sent: dict[str, Any], settings: Settings
    ) -> dict[str, Any]:
        """A config sent, or a new type, is validated against the type and sealed; secrets
        sent back as "***" keep their stored values while the destination stays."""
        columns = dict(sent)
        tool_type = columns.get("type") or item.type
        if "config" in columns or tool_type != item.type:
            raw = columns["config"] if "config" in columns else masked_config(item.config)
            config = _parse_config(tool_type, raw)
            _check_stdio(config, settings)
            columns.update(config=_seal(config, item.config, settings), type=tool_type)
        return columns

    async def check_deletable(self, session: AsyncSession, item: Tool) -> None:
        await refuse_if_published(session, "tool", item.id)
        agent = (
            await session.execute(
                select(Agent.id, Agent.name)
                .join(AgentTool, AgentTool.agent_id == Agent.id)
                .where(AgentTool.tool_id == item.id)
                .order_by(Agent.id)
                .limit(1)
            )
        ).first()
        if agent is not None:
            raise Conflict(
                f"tool {item.id} is still listed by agent {agent.id} ({agent.name!r}); "
                "remove it from the agent's tool_ids first",
                {"agent_id": agent.id},
            )


tools = Tools(Tool, "tool")
router = resource_router(tools, out=ToolOut, create=ToolCreate, update=ToolUpdate)


@router.post(
    "/{tool_id}/test",
    summary="Test a tool: really connect (HTTP: make the request; MCP: list the "
    "tools, and call the tool when arguments are given)",
    responses=error_responses(404),
)
async def try_tool(
    tool_id: int, editor: Editor, body: ToolTestRequest | None = None
) -> Envelope[ToolTestResult]:
    """A failed connection is ``ok: false`` with the reason (DNS, refused, timeout, TLS,
    HTTP status, MCP protocol error), never an error status. An MCP tool saved without
    input_schema gets the one its server lists here."""
    session = editor.session
    tool = await tools.get(session, tool_id, editor.workspace_id)
    # Give the connection back to the pool: the test may wait on the network.
    await session.close()
    arguments = body.arguments if body is not None else None
    result = await try_connection(tool, arguments, editor.settings)
    schema = discovered_schema(tool, result.tools) if tool.input_schema is None else None
    if schema is not None:
        await session.execute(update(Tool).where(Tool.id == tool.id).values(input_schema=schema))
        await session.commit()
    return ok(result)
