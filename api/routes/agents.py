"""Agents: what is special to them is the tools they may call and their write-only API key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Unprocessable
from api.resources import Resource, refuse_if_published
from api.routes.resource import resource_router
from api.schemas.agents import AgentCreate, AgentOut, AgentUpdate
from infra.models import Agent, AgentTool, Tool
from infra.secrets import encrypt
from infra.settings import Settings


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
            [
                {
                    "loc": ["body", "tool_ids", tool_ids.index(t)],
                    "msg": f"tool {t} does not exist",
                    "type": "unknown_tool",
                }
                for t in missing
            ],
        )


def _columns(fields: dict[str, Any], secret_key: str) -> dict[str, Any]:
    """The agent's fields as sent, as the columns that store them."""
    columns = dict(fields)
    if "api_key" in columns:
        key = columns.pop("api_key")
        # null (or an empty key) clears the key.
        columns["api_key_encrypted"] = encrypt(key.get_secret_value(), secret_key) if key else None
    if "metadata" in columns:
        columns["metadata_"] = columns.pop("metadata")
    if "tool_ids" in columns:
        columns["tool_links"] = [
            AgentTool(tool_id=tid, position=i) for i, tid in enumerate(columns.pop("tool_ids"))
        ]
    return columns


class Agents(Resource[Agent]):
    async def new(
        self, session: AsyncSession, workspace_id: int, body: AgentCreate, settings: Settings
    ) -> Agent:
        await _check_tools(session, workspace_id, body.tool_ids)
        return Agent(workspace_id=workspace_id, **_columns(dict(body), settings.secret_key))

    async def columns(
        self, session: AsyncSession, item: Agent, sent: dict[str, Any], settings: Settings
    ) -> dict[str, Any]:
        """A new base_url or provider (the key's destination) drops the stored key unless
        a new one is sent with it: a key never goes to a host it was not given for."""
        if "tool_ids" in sent:
            await _check_tools(session, item.workspace_id, sent["tool_ids"])
        columns = _columns(sent, settings.secret_key)
        repointed = (
            sent.get("base_url", item.base_url) != item.base_url
            or sent.get("provider", item.provider) != item.provider
        )
        if repointed and "api_key" not in sent:
            columns["api_key_encrypted"] = None
        return columns

    async def check_deletable(self, session: AsyncSession, item: Agent) -> None:
        await refuse_if_published(session, "agent", item.id)


router = resource_router(
    Agents(Agent, "agent", article="an"), out=AgentOut, create=AgentCreate, update=AgentUpdate
)
