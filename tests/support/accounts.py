"""Credentials for tests: users, memberships and API keys made straight in the
database (as ``keel user create`` / ``keel apikey create`` would), and an API client
that sends an owner's key.

``owner_key`` and ``owner_client`` are fixtures (registered in tests/conftest.py);
once every route requires a credential, tests use ``owner_client`` where they use
``client`` today.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import delete

from infra.accounts import OPERATOR, create_api_key, create_user
from infra.db import create_engine, session_factory
from infra.models import DEFAULT_WORKSPACE_ID, Membership, Workspace
from infra.security.roles import Role
from infra.settings import Settings

PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Accounts:
    """Makes principals in the test database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings.resolved_database_url)
        self.sessions = session_factory(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def workspace(self, name: str) -> int:
        async with self.sessions() as session:
            workspace = Workspace(name=name)
            session.add(workspace)
            await session.commit()
            return workspace.id

    async def user(
        self,
        email: str,
        role: Role | None = Role.OWNER,
        workspace_id: int = DEFAULT_WORKSPACE_ID,
        password: str = PASSWORD,
    ) -> int:
        async with self.sessions() as session:
            user = await create_user(session, email, password)
            if role is not None:
                session.add(Membership(workspace_id=workspace_id, user_id=user.id, role=role.value))
            await session.commit()
            return user.id

    async def member(self, user_id: int, role: Role, workspace_id: int) -> None:
        async with self.sessions() as session:
            session.add(Membership(workspace_id=workspace_id, user_id=user_id, role=role.value))
            await session.commit()

    async def api_key(
        self,
        role: Role = Role.OWNER,
        workspace_id: int = DEFAULT_WORKSPACE_ID,
        name: str = "test key",
        expires_at: datetime | None = None,
    ) -> str:
        async with self.sessions() as session:
            _row, key = await create_api_key(
                session,
                self.settings.secret_key,
                workspace_id=workspace_id,
                name=name,
                role=role,
                created_by=OPERATOR,
                expires_at=expires_at,
            )
            await session.commit()
            return key

    async def forget_workspaces(self) -> None:
        """Drop workspaces other than the default (the suite keeps the workspaces table)."""
        async with self.sessions() as session:
            await session.execute(delete(Workspace).where(Workspace.id != DEFAULT_WORKSPACE_ID))
            await session.commit()


@pytest.fixture
async def accounts(settings: Settings) -> AsyncIterator[Accounts]:
    made = Accounts(settings)
    await made.forget_workspaces()
    yield made
    await made.close()


@pytest.fixture
async def owner_key(accounts: Accounts) -> str:
    """An owner API key of the default workspace."""
    return await accounts.api_key(Role.OWNER, name="test owner")


@pytest.fixture
async def owner_client(
    client: httpx.AsyncClient, owner_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app client, sending the owner key on every request."""
    client.headers.update(bearer(owner_key))
    yield client
