"""Who is calling: a bearer credential (API key or access token) resolved to a Caller
(principal, workspace, role), for HTTP requests and WebSockets alike.

The dependencies built on this are in ``api.deps``; this module is the one place
that reads credentials.
"""

from __future__ import annotations

from fastapi import WebSocket
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.caller_cache import CallerCache
from api.errors import Unauthorized
from infra.accounts import (
    Caller,
    api_key_caller,
    caller_for_user,
    redeem_ws_ticket,
    usable_api_key,
)
from infra.security.api_keys import hash_api_key, looks_like_api_key, well_formed
from infra.security.tokens import InvalidToken, read_access_token
from infra.settings import Settings

# WebSocket close code for a missing or invalid credential (the HTTP 401 of sockets).
CLOSE_UNAUTHORIZED = 4401

INVALID_API_KEY = "the API key is not valid: unknown, revoked or expired"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`keel_...`) or an access token from `POST /api/v1/Auth/token`.",
)


async def caller_from_bearer(
    session: AsyncSession, settings: Settings, token: str, callers: CallerCache
) -> Caller:
    """The caller a bearer token stands for; Unauthorized when it stands for nobody.
    A credential verified in the last few seconds is not queried again (``callers``)."""
    if looks_like_api_key(token):
        if not well_formed(token):
            raise Unauthorized(INVALID_API_KEY)
        key_hash = hash_api_key(settings.secret_key, token)
        caller = callers.get(key_hash)
        if caller is None:
            row = await usable_api_key(session, key_hash)
            if row is None:
                raise Unauthorized(INVALID_API_KEY)
            caller = api_key_caller(row)
            callers.put(key_hash, caller, row.expires_at)
        return caller
    try:
        claims = read_access_token(settings.secret_key, token)
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from None
    # The token itself is checked above on every request; what is remembered is that its
    # user is a member of the workspace, with that role.
    member_key = f"user:{claims.user_id}:{claims.workspace_id}"
    caller = callers.get(member_key)
    if caller is None:
        caller = await caller_for_user(session, claims.user_id, claims.workspace_id)
        if caller is None:
            raise Unauthorized(
                f"the access token's user is no longer a member of workspace "
                f"{claims.workspace_id}; sign in again"
            )
        callers.put(member_key, caller)
    return caller


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def websocket_caller(websocket: WebSocket) -> Caller | None:
    """The caller of a WebSocket: its ``Authorization: Bearer`` header, or a single-use
    ``?ticket=`` from ``POST /api/v1/Auth/ws-ticket``. None when neither is valid: close
    with CLOSE_UNAUTHORIZED before sending anything."""
    state = websocket.app.state
    token = _bearer_token(websocket.headers.get("authorization"))
    ticket = websocket.query_params.get("ticket")
    async with state.sessions() as session:
        if token is not None:
            try:
                return await caller_from_bearer(session, state.settings, token, state.callers)
            except Unauthorized:
                return None
        if ticket:
            return await redeem_ws_ticket(session, ticket)
    return None
