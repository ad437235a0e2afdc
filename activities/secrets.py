"""Secrets read by id, right before use: workflow inputs and Temporal's history carry none.

A run's snapshot of an agent or tool has its secrets left out (``api_key_encrypted``
empty, sealed config values masked). The activity reads them from the database, in the
run's workspace, and opens them with the worker's own key. A run recorded before
secrets stayed out still carries ciphertext; that is used as it is, so such runs
finish (and replay) unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.models import Agent, Tool
from infra.secrets import decrypt
from infra.tools.sealing import masked_entries, with_stored_secrets
from workflows.contracts import AgentSpec, ToolSpec


class AgentRepointed(ValueError):
    """The stored agent now calls another base_url than the run's snapshot."""


_AGENT_KEY = select(Agent.base_url, Agent.api_key_encrypted).where(
    Agent.id == bindparam("agent_id"), Agent.workspace_id == bindparam("workspace_id")
)


class StoredKey(NamedTuple):
    """An agent's API key as stored (sealed), with the base_url it is for."""

    base_url: str | None
    api_key_encrypted: str | None


async def stored_agent_key(
    session: AsyncSession, agent_id: int, workspace_id: int
) -> StoredKey | None:
    """The agent's stored key and base_url (None: no such agent in the workspace)."""
    parameters = {"agent_id": agent_id, "workspace_id": workspace_id}
    row = (await session.execute(_AGENT_KEY, parameters)).first()
    return None if row is None else StoredKey(row.base_url, row.api_key_encrypted)


def agent_api_key(spec: AgentSpec, stored: StoredKey | None, secret_key: str) -> str | None:
    """The agent's API key in plain text (None when it has none), from the run's
    snapshot when it still carries one, else from ``stored``. Raises
    ``SecretDecryptionError`` for a key sealed under another server key, and
    ``AgentRepointed`` when the agent's base_url changed since the run started."""
    if spec.api_key_encrypted:
        return decrypt(spec.api_key_encrypted, secret_key)
    if stored is None or not stored.api_key_encrypted:
        return None
    if stored.base_url != spec.base_url:
        raise AgentRepointed(
            f"agent {spec.name!r} now calls another base_url than when the "
            "run started; its api_key is not sent to the old one"
        )
    return decrypt(stored.api_key_encrypted, secret_key)


async def tool_config(
    sessions: async_sessionmaker[AsyncSession], spec: ToolSpec, workspace_id: int
) -> dict[str, Any]:
    """The tool's config as the run snapshotted it, with its sealed secrets read from
    the database (still sealed: the tool client opens them). Raises
    ``infra.tools.sealing.Repointed`` when the stored tool points elsewhere now."""
    if not masked_entries(spec.config):
        return spec.config
    async with sessions() as session:
        stored = await session.scalar(
            select(Tool.config).where(Tool.id == spec.id, Tool.workspace_id == workspace_id)
        )
    return with_stored_secrets(spec.config, stored)
