"""Agents: what is special to them is the tools they may call and their write-only API key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import NotFound, Unprocessable
from api.resources import Resource, refuse_if_published
from api.routes.resource import resource_router
from api.schemas.agents import AgentCreate, AgentOut, AgentUpdate
from api.schemas.common import MAX_DB_ID
from infra.models import Agent, AgentTool, Tool
from infra.secrets import encrypt
from infra.settings import Settings

LINKS = AgentTool.__table__
# The agent's columns under their attribute names (``metadata_``), as AgentOut reads them.
_READ = select(
    *(
        column.label(attribute.key)
        for attribute in Agent.__mapper__.column_attrs
        for column in attribute.columns
    ),
    LINKS.c.tool_id.label("linked_tool_id"),
).outerjoin(LINKS, LINKS.c.agent_id == Agent.__table__.c.id)
# Built once, with bound parameters: SQLAlchemy derives a statement's cache key anew each
# time one is built, and once for a statement reused (a fifth of this read's CPU, in
# process).
_READ_ONE = _READ.where(
    Agent.__table__.c.id == bindparam("agent_id"),
    Agent.__table__.c.workspace_id == bindparam("workspace_id"),
).order_by(LINKS.c.position)


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

    async def read(self, session: AsyncSession, item_id: int, workspace_id: int) -> Any:
        """The agent with its tool ids in one query (a row per tool link), as plain rows:
        an ORM read takes two (the agent, then its links by selectin)."""
        rows: Sequence[Any] = ()
        if 1 <= item_id <= MAX_DB_ID:  # ids outside the column's range name nothing
            parameters = {"agent_id": item_id, "workspace_id": workspace_id}
            rows = (await session.execute(_READ_ONE, parameters)).all()
        if not rows:
            raise NotFound(f"agent {item_id} does not exist")
        agent = rows[0]._asdict()
        del agent["linked_tool_id"]
        agent["tool_ids"] = [row.linked_tool_id for row in rows if row.linked_tool_id is not None]
        return agent

    async def check_deletable(self, session: AsyncSession, item: Agent) -> None:
        await refuse_if_published(session, "agent", item.id)


router = resource_router(
    Agents(Agent, "agent", article="an"), out=AgentOut, create=AgentCreate, update=AgentUpdate
)
