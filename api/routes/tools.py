from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
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
    ToolUpdate,
    parse_config,
)
from infra.models import Agent, AgentTool, Tool
from infra.secrets import encrypt

router = APIRouter(prefix="/api/v1/Tool", tags=["Tool"], responses=error_responses(422))

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


def render(tool: Tool) -> dict[str, Any]:
    return ToolOut(
        id=tool.id,
        name=tool.name,
        description=tool.description,
        type=tool.type,
        input_schema=tool.input_schema,
        config=masked_config(tool.config),
        created_at=tool.created_at,
        updated_at=tool.updated_at,
    ).model_dump(mode="json")


@router.post("/", status_code=201, response_model=Envelope[ToolOut], summary="Create a tool",
             responses=error_responses(409))
async def create_tool(body: ToolCreate, session: SessionDep, settings: SettingsDep,
                      workspace_id: WorkspaceDep) -> dict[str, Any]:
    await ensure_name_free(session, Tool, workspace_id, body.name, "a tool")
    tool = Tool(
        workspace_id=workspace_id,
        name=body.name,
        description=body.description,
        type=body.type,
        input_schema=body.input_schema,
        config=_seal(body.config, None, settings.secret_key),
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
