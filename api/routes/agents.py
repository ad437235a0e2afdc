from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.crud import (
    commit_unique,
    contains,
    ensure_name_free,
    get_or_404,
    paginate,
    refuse_if_published,
)
from api.deps import PageDep, SessionDep, SettingsDep, WorkspaceDep
from api.errors import Unprocessable
from api.schemas.agents import AgentCreate, AgentOut, AgentUpdate
from api.schemas.common import Envelope, Page, error_responses, ok
from infra.models import Agent, AgentTool, Tool
from infra.secrets import encrypt

router = APIRouter(prefix="/api/v1/Agent", tags=["Agent"], responses=error_responses(422))


def render(agent: Agent) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        provider=agent.provider,
        model=agent.model,
        base_url=agent.base_url,
        api_key_set=agent.api_key_encrypted is not None,
        system_prompt=agent.system_prompt,
        temperature=agent.temperature,
        max_tokens=agent.max_tokens,
        tool_ids=agent.tool_ids,
        max_iterations=agent.max_iterations,
        metadata=agent.metadata_,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


async def _check_tools(session: AsyncSession, workspace_id: int, tool_ids: list[int]) -> None:
    if not tool_ids:
        return
    found = set(
        await session.scalars(
            select(Tool.id).where(Tool.workspace_id == workspace_id, Tool.id.in_(tool_ids))
        )
    )
    missing = [tid for tid in tool_ids if tid not in found]
    if missing:
        raise Unprocessable(
            f"tool {missing[0]} does not exist; create it first or remove it from tool_ids",
            [{"loc": ["body", "tool_ids", tool_ids.index(t)], "msg": f"tool {t} does not exist",
              "type": "unknown_tool"} for t in missing],
        )


def _set_tools(agent: Agent, tool_ids: list[int]) -> None:
    agent.tool_links = [AgentTool(tool_id=tid, position=i) for i, tid in enumerate(tool_ids)]


@router.post("/", status_code=201, response_model=Envelope[AgentOut], summary="Create an agent",
             responses=error_responses(409))
async def create_agent(body: AgentCreate, session: SessionDep, settings: SettingsDep,
                       workspace_id: WorkspaceDep) -> dict[str, Any]:
    await ensure_name_free(session, Agent, workspace_id, body.name, "an agent")
    await _check_tools(session, workspace_id, body.tool_ids)
    agent = Agent(
        workspace_id=workspace_id,
        name=body.name,
        description=body.description,
        provider=body.provider,
        model=body.model,
        base_url=body.base_url,
        api_key_encrypted=(
            encrypt(body.api_key.get_secret_value(), settings.secret_key) if body.api_key else None
        ),
        system_prompt=body.system_prompt,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        max_iterations=body.max_iterations,
        metadata_=body.metadata,
    )
    _set_tools(agent, body.tool_ids)
    session.add(agent)
    await commit_unique(session, f"an agent named {body.name!r} already exists")
    return ok(render(agent))


@router.get("/", response_model=Envelope[Page[AgentOut]], summary="List agents")
async def list_agents(session: SessionDep, workspace_id: WorkspaceDep, page: PageDep,
                      q: Annotated[str | None, Query(max_length=100,
                                                     description="Name contains.")] = None
                      ) -> dict[str, Any]:
    stmt = select(Agent).where(Agent.workspace_id == workspace_id).order_by(Agent.id)
    if q:
        stmt = stmt.where(contains(Agent.name, q))
    return ok(await paginate(session, stmt, page, render))


@router.get("/{agent_id}", response_model=Envelope[AgentOut], summary="Get an agent",
            responses=error_responses(404))
async def get_agent(agent_id: int, session: SessionDep, workspace_id: WorkspaceDep
                    ) -> dict[str, Any]:
    return ok(render(await get_or_404(session, Agent, agent_id, workspace_id, "agent")))


@router.put("/{agent_id}", response_model=Envelope[AgentOut],
            summary="Update an agent (partial updates allowed)",
            responses=error_responses(404, 409))
async def update_agent(agent_id: int, body: AgentUpdate, session: SessionDep,
                       settings: SettingsDep, workspace_id: WorkspaceDep) -> dict[str, Any]:
    agent = await get_or_404(session, Agent, agent_id, workspace_id, "agent")
    sent = body.model_fields_set
    not_nullable = {"name", "description", "provider", "model", "system_prompt", "tool_ids",
                    "max_iterations", "metadata"}
    nulls = [f for f in sent & not_nullable if getattr(body, f) is None]
    if nulls:
        raise Unprocessable(f"{nulls[0]} cannot be null",
                            [{"loc": ["body", f], "msg": "cannot be null", "type": "null"}
                             for f in nulls])
    if "name" in sent and body.name != agent.name:
        await ensure_name_free(session, Agent, workspace_id, body.name or "", "an agent",
                               exclude_id=agent.id)
    if body.tool_ids is not None:
        await _check_tools(session, workspace_id, body.tool_ids)
        _set_tools(agent, body.tool_ids)
    for field in ("name", "description", "provider", "model", "base_url", "system_prompt",
                  "temperature", "max_tokens", "max_iterations"):
        if field in sent:
            setattr(agent, field, getattr(body, field))
    if "metadata" in sent:
        agent.metadata_ = body.metadata or {}
    if "api_key" in sent:
        agent.api_key_encrypted = (
            encrypt(body.api_key.get_secret_value(), settings.secret_key) if body.api_key else None
        )
    await commit_unique(session, f"an agent named {agent.name!r} already exists")
    await session.refresh(agent)
    return ok(render(agent))


@router.delete("/{agent_id}", response_model=Envelope[None], summary="Delete an agent",
               responses=error_responses(404, 409))
async def delete_agent(agent_id: int, session: SessionDep, workspace_id: WorkspaceDep
                       ) -> dict[str, Any]:
    agent = await get_or_404(session, Agent, agent_id, workspace_id, "agent")
    await refuse_if_published(session, "agent", agent.id)
    await session.delete(agent)
    await session.commit()
    return ok(None)
