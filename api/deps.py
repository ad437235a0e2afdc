"""Typed dependencies. Resources live on ``app.state``, acquired in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from infra.models import DEFAULT_WORKSPACE_ID
from infra.settings import Settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


def _workspace() -> int:
    # One workspace until access control arrives; every query is scoped by it.
    return DEFAULT_WORKSPACE_ID


class PageParams:
    def __init__(
        self,
        page: Annotated[int, Query(ge=1, description="Page number, from 1.")] = 1,
        page_size: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    ) -> None:
        self.page = page
        self.page_size = page_size

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
TemporalDep = Annotated[Client, Depends(_temporal)]
WorkspaceDep = Annotated[int, Depends(_workspace)]
PageDep = Annotated[PageParams, Depends()]
