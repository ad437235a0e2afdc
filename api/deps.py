"""Typed dependencies. Resources live on ``app.state``, acquired in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.middleware.request_context import request_session
from api.principal import bearer_scheme, caller_from_bearer
from infra.accounts import Caller
from infra.security.rate_limit import RateLimiter
from infra.security.roles import Role
from infra.settings import Settings


async def _session(request: Request) -> AsyncSession:
    return request_session(request)


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain
# ``def`` dependency in a worker thread, a thread hop per request for a dict lookup.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _checked_caller(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
    role: Role | None,
) -> Caller:
    """The caller of a request: 401 without a valid credential, 429 over its rate, 403
    when ``role`` is not among what its role may do."""
    if credentials is None:
        raise Unauthorized(
            "this endpoint needs a credential: send 'Authorization: Bearer <API key or "
            "access token>' (POST /api/v1/Auth/token gives an access token)",
            invalid=False,
        )
    state = request.app.state
    caller = await caller_from_bearer(session, settings, credentials.credentials, state.callers)
    # Logs carry who acted (type and id), never the credential.
    structlog.contextvars.bind_contextvars(
        principal_type=caller.principal.type, principal_id=caller.principal.id
    )
    limiter: RateLimiter = state.rate_limiter
    wait_s = limiter.take(f"{caller.principal.type}:{caller.principal.id}")
    if wait_s is not None:
        raise TooManyRequests(
            f"too many requests from this {caller.principal.type} (the limit is "
            f"{settings.rate_limit_per_s:g} per second, in bursts of "
            f"{settings.rate_limit_burst}); retry after the time in Retry-After",
            wait_s,
        )
    if role is not None and not caller.may(role):
        raise Forbidden(
            f"this needs the {role.value} role; your role in workspace "
            f"{caller.workspace_id} is {caller.role.value}"
        )
    return caller


class PageParams:
    def __init__(self, page: int = 1, page_size: int = 20) -> None:
        self.page = page
        self.page_size = page_size

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


async def _page(
    page: Annotated[int, Query(ge=1, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
) -> PageParams:
    # A coroutine, not the class itself: FastAPI would call the class in a worker thread.
    return PageParams(page, page_size)


@dataclass(frozen=True, slots=True)
class Context:
    """What a route works with: the request's database session, the settings, the Temporal
    client and the caller, whose role the alias that gave it has checked."""

    session: AsyncSession
    settings: Settings
    temporal: Client
    caller: Caller

    @property
    def workspace_id(self) -> int:
        return self.caller.workspace_id


def context_for(role: Role | None) -> Any:
    """A dependency: the Context of a caller whose role includes ``role`` (any valid
    credential for None); 401 without a credential, 403 with too low a role.

    One dependency that opens the session and checks the caller itself: FastAPI solves
    every sub-dependency of every request anew, and a chain of them (session, settings,
    client, caller, role) was over a quarter of a cached read's CPU. Its only
    sub-dependency is the bearer scheme, which puts the security scheme in the OpenAPI
    document. FastAPI caches it per request, so a route and its own dependencies (an
    execution loaded by id) share one Context and one session."""

    async def context(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Context:
        state = request.app.state
        settings: Settings = state.settings
        session = request_session(request)
        caller = await _checked_caller(request, session, settings, credentials, role)
        return Context(session, settings, state.temporal, caller)

    return Depends(context)


SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PageDep = Annotated[PageParams, Depends(_page)]
# One parameter per route says who may call it and gives it what it works with.
Member = Annotated[Context, context_for(None)]  # any valid credential, whatever its role
Viewer = Annotated[Context, context_for(Role.VIEWER)]
Editor = Annotated[Context, context_for(Role.EDITOR)]
Admin = Annotated[Context, context_for(Role.ADMIN)]
