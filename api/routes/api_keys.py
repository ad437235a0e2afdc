"""/api/v1/ApiKey/: the workspace's API keys (admins). The key is shown once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select

from api.deps import Admin, PageDep
from api.errors import Forbidden, Unprocessable
from api.resources import get_or_404, paginate
from api.routes.router import PrefixRouter
from api.schemas.accounts import ApiKeyIn, ApiKeyOut, NewApiKeyOut, PrincipalOut
from api.schemas.common import Envelope, Page, error_responses, ok
from infra.accounts import create_api_key
from infra.models import ApiKey
from infra.security.roles import Role

router = PrefixRouter(
    prefix="/api/v1/ApiKey", tags=["ApiKey"], responses=error_responses(401, 403, 422)
)


def render(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "role": Role(key.role),
        "prefix": key.prefix,
        "created_at": key.created_at,
        "created_by": PrincipalOut(
            type=key.created_by_type,  # type: ignore[arg-type]
            id=key.created_by_id,
            name=key.created_by_name,
        ),
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


async def _key(key_id: int, admin: Admin) -> ApiKey:
    return await get_or_404(admin.session, ApiKey, key_id, admin.workspace_id, "API key")


# The key named in the path, of the admin's workspace.
WorkspaceKey = Annotated[ApiKey, Depends(_key)]


@router.post(
    "/",
    status_code=201,
    summary="Create an API key (the response is the only time the key is shown)",
)
async def create(body: ApiKeyIn, admin: Admin) -> Envelope[NewApiKeyOut]:
    caller = admin.caller
    if not caller.may(body.role):
        raise Forbidden(
            f"a key cannot have a higher role than its creator: yours is {caller.role.value}"
        )
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise Unprocessable(
            "expires_at is in the past; give a future time or none",
            [
                {
                    "loc": ["body", "expires_at"],
                    "msg": "must be in the future",
                    "type": "past_expiry",
                }
            ],
        )
    row, key = await create_api_key(
        admin.session,
        admin.settings.secret_key,
        workspace_id=caller.workspace_id,
        name=body.name,
        role=body.role,
        created_by=caller.principal,
        expires_at=body.expires_at,
    )
    await admin.session.commit()
    return ok(NewApiKeyOut(**render(row), key=key))


@router.get("/", summary="List API keys")
async def list_keys(admin: Admin, page: PageDep) -> Envelope[Page[ApiKeyOut]]:
    stmt = select(ApiKey).where(ApiKey.workspace_id == admin.workspace_id).order_by(ApiKey.id)
    return ok(await paginate(admin.session, stmt, page, lambda k: ApiKeyOut(**render(k))))


@router.get("/{key_id}", summary="Get an API key", responses=error_responses(404))
async def get_key(key: WorkspaceKey) -> Envelope[ApiKeyOut]:
    return ok(ApiKeyOut(**render(key)))


@router.delete(
    "/{key_id}",
    summary="Revoke an API key at once (runs it started go on)",
    responses=error_responses(404),
)
async def revoke(key: WorkspaceKey, admin: Admin, request: Request) -> Envelope[ApiKeyOut]:
    caller = admin.caller
    if not caller.may(Role(key.role)):
        raise Forbidden(f"this key's role ({key.role}) is above yours ({caller.role.value})")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        await admin.session.commit()
    await request.app.state.socket_guard.revoked("api_key", key.id)
    return ok(ApiKeyOut(**render(key)))
