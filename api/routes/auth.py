"""/api/v1/Auth/: sign in (an access token), who am I, and WebSocket tickets."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Form, Request

from api.deps import Member, SessionDep, SettingsDep
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.routes.router import PrefixRouter
from api.schemas.accounts import MeOut, PrincipalOut, TokenOut, WsTicketOut
from api.schemas.common import Envelope, error_responses, ok
from infra.accounts import (
    WS_TICKET_TTL,
    authenticate,
    first_membership,
    issue_ws_ticket,
    membership,
    normalize_email,
)
from infra.security.roles import Role
from infra.security.throttle import FailureThrottle
from infra.security.tokens import issue_access_token

router = PrefixRouter(prefix="/api/v1/Auth", tags=["Auth"], responses=error_responses(401, 422))

BAD_LOGIN = "wrong email or password"


def _throttle(request: Request) -> FailureThrottle:
    throttle: FailureThrottle = request.app.state.login_throttle
    return throttle


@router.post("/token", summary="Sign in: an access token", responses=error_responses(403, 429))
async def token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=254, description="The user's email.")],
    password: Annotated[str, Form(max_length=1024)],
    workspace_id: Annotated[
        int | None, Form(ge=1, le=2**31 - 1, description="Default: the user's first workspace.")
    ] = None,
) -> Envelope[TokenOut]:
    throttle = _throttle(request)
    who = normalize_email(username)
    wait = throttle.retry_after(who)
    if wait is not None:
        raise TooManyRequests(
            f"too many failed sign-ins for {who}; try again in {max(1, round(wait))} s", wait
        )
    user = await authenticate(session, who, password)
    if user is None:
        throttle.failed(who)
        raise Unauthorized(BAD_LOGIN)
    throttle.succeeded(who)
    member = (
        await membership(session, user.id, workspace_id)
        if workspace_id is not None
        else await first_membership(session, user.id)
    )
    if member is None:
        where = f"workspace {workspace_id}" if workspace_id is not None else "any workspace"
        raise Forbidden(f"{who} is not a member of {where}; ask an admin to add you")
    ttl = timedelta(seconds=settings.access_token_ttl_s)
    access_token, _claims = issue_access_token(
        settings.secret_key, user.id, member.workspace_id, ttl
    )
    return ok(
        TokenOut(
            access_token=access_token,
            expires_in=settings.access_token_ttl_s,
            workspace_id=member.workspace_id,
            role=Role(member.role),
        )
    )


@router.get("/me", summary="Who the credential stands for")
async def me(member: Member) -> Envelope[MeOut]:
    caller = member.caller
    return ok(
        MeOut(
            principal=PrincipalOut(**caller.principal.as_dict()),
            workspace_id=caller.workspace_id,
            role=caller.role,
        )
    )


@router.post("/ws-ticket", summary="A single-use WebSocket ticket (60 s), for browsers")
async def ws_ticket(member: Member) -> Envelope[WsTicketOut]:
    ticket = await issue_ws_ticket(member.session, member.caller)
    return ok(WsTicketOut(ticket=ticket, expires_in=int(WS_TICKET_TTL.total_seconds())))
