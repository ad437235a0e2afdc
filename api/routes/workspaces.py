"""/api/v1/Workspace/: the caller's workspaces, and the members of the current one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from api.deps import Admin, Context, Member, PageDep, Viewer
from api.errors import Conflict, Forbidden, NotFound
from api.resources import commit_unique
from api.schemas.accounts import MemberIn, MemberOut, MemberUpdate, WorkspaceIn, WorkspaceOut
from api.schemas.common import MAX_DB_ID, Envelope, Page, error_responses, ok
from infra.accounts import (
    Caller,
    EmailTaken,
    create_user,
    lock_workspace,
    owner_count,
    user_by_email,
)
from infra.models import Membership, User, Workspace
from infra.security.roles import Role

router = APIRouter(
    prefix="/api/v1/Workspace", tags=["Workspace"], responses=error_responses(401, 403, 422)
)


@router.get(
    "/",
    response_model=Envelope[Page[WorkspaceOut]],
    summary="The caller's workspaces and its role in each",
)
async def list_workspaces(member: Member, page: PageDep) -> dict[str, Any]:
    caller, session = member.caller, member.session
    if caller.principal.type == "user":
        rows = (
            await session.execute(
                select(Workspace, Membership.role)
                .join(Membership, Membership.workspace_id == Workspace.id)
                .where(Membership.user_id == caller.principal.id)
                .order_by(Workspace.id)
            )
        ).all()
        mine = [(workspace, Role(role)) for workspace, role in rows]
    else:  # an API key belongs to its one workspace
        workspace = await session.get(Workspace, caller.workspace_id)
        mine = [(workspace, caller.role)] if workspace is not None else []
    items = [
        WorkspaceOut(id=w.id, name=w.name, role=role, created_at=w.created_at) for w, role in mine
    ]
    window = items[page.offset : page.offset + page.page_size]
    return ok(
        {"items": window, "total": len(items), "page": page.page, "page_size": page.page_size}
    )


@router.post(
    "/",
    status_code=201,
    response_model=Envelope[WorkspaceOut],
    summary="Create a workspace; the user who creates it owns it",
    responses=error_responses(409),
)
async def create_workspace(body: WorkspaceIn, member: Member) -> dict[str, Any]:
    caller, session = member.caller, member.session
    if caller.principal.type != "user" or caller.principal.id is None:
        raise Forbidden("only a user can create a workspace (an API key belongs to one)")
    taken = f"a workspace named {body.name!r} already exists; choose another name"
    if (
        await session.scalar(
            select(Workspace.id).where(func.lower(Workspace.name) == body.name.lower())
        )
        is not None
    ):
        raise Conflict(taken)
    workspace = Workspace(name=body.name)
    session.add(workspace)
    await session.flush()
    session.add(
        Membership(workspace_id=workspace.id, user_id=caller.principal.id, role=Role.OWNER.value)
    )
    await commit_unique(session, taken)
    return ok(
        WorkspaceOut(
            id=workspace.id, name=workspace.name, role=Role.OWNER, created_at=workspace.created_at
        )
    )


def _member_out(member: Membership, user: User) -> MemberOut:
    return MemberOut(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=Role(member.role),
        created_at=member.created_at,
    )


def _members(workspace_id: int) -> Any:
    return (
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(User.email)
    )


@router.get(
    "/members",
    response_model=Envelope[Page[MemberOut]],
    summary="Members of the caller's workspace",
)
async def list_members(viewer: Viewer, page: PageDep) -> dict[str, Any]:
    session, workspace_id = viewer.session, viewer.workspace_id
    stmt = _members(workspace_id)
    total = (
        await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.workspace_id == workspace_id)
        )
        or 0
    )
    rows = (await session.execute(stmt.offset(page.offset).limit(page.page_size))).all()
    return ok(
        {
            "items": [_member_out(m, u) for m, u in rows],
            "total": total,
            "page": page.page,
            "page_size": page.page_size,
        }
    )


def _may_grant(caller: Caller, role: Role) -> None:
    if not caller.may(role):
        raise Forbidden(
            f"you cannot grant {role.value}: it is above your role ({caller.role.value})"
        )


def _may_touch(caller: Caller, member: Membership) -> None:
    if Role(member.role) is Role.OWNER and not caller.may(Role.OWNER):
        raise Forbidden("only an owner can change or remove an owner")


async def _member_to_change(user_id: int, admin: Admin) -> tuple[Membership, User]:
    """The member named in the path, if this admin may change or remove them."""
    stmt = _members(admin.workspace_id).where(Membership.user_id == user_id)
    row = (await admin.session.execute(stmt)).first() if 1 <= user_id <= MAX_DB_ID else None
    if row is None:
        raise NotFound(f"user {user_id} is not a member of this workspace")
    member, user = row
    _may_touch(admin.caller, member)
    return member, user


MemberToChange = Annotated[tuple[Membership, User], Depends(_member_to_change)]


async def _keep_an_owner(admin: Context, member: Membership) -> None:
    await lock_workspace(admin.session, admin.workspace_id)
    if (
        Role(member.role) is Role.OWNER
        and await owner_count(admin.session, admin.workspace_id) <= 1
    ):
        raise Conflict("this is the workspace's last owner; make another member owner first")


@router.post(
    "/members",
    status_code=201,
    response_model=Envelope[MemberOut],
    summary="Add a user to the workspace (created when a password is given)",
    responses=error_responses(404, 409),
)
async def add_member(body: MemberIn, admin: Admin) -> dict[str, Any]:
    caller, session = admin.caller, admin.session
    _may_grant(caller, body.role)
    user = await user_by_email(session, body.email)
    if user is None:
        if body.password is None:
            raise NotFound(
                f"no user has the email {body.email!r}; send a password to create the account"
            )
        try:
            user = await create_user(session, body.email, body.password)
        except EmailTaken:
            raise Conflict(
                f"{body.email!r} was just created by another request; try again"
            ) from None
    elif body.password is not None:
        raise Conflict(f"{body.email!r} already has an account; add it without a password")
    if await session.get(Membership, (caller.workspace_id, user.id)) is not None:
        raise Conflict(
            f"{user.email} is already a member; change their role with PUT /members/{user.id}"
        )
    member = Membership(workspace_id=caller.workspace_id, user_id=user.id, role=body.role.value)
    session.add(member)
    await commit_unique(session, f"{user.email} is already a member")
    return ok(_member_out(member, user))


@router.put(
    "/members/{user_id}",
    response_model=Envelope[MemberOut],
    summary="Change a member's role",
    responses=error_responses(404, 409),
)
async def change_member(
    body: MemberUpdate, admin: Admin, changed: MemberToChange
) -> dict[str, Any]:
    member, user = changed
    _may_grant(admin.caller, body.role)
    if body.role is not Role.OWNER:
        await _keep_an_owner(admin, member)
    member.role = body.role.value
    await admin.session.commit()
    return ok(_member_out(member, user))


@router.delete(
    "/members/{user_id}",
    response_model=Envelope[None],
    summary="Remove a member from the workspace",
    responses=error_responses(404, 409),
)
async def remove_member(admin: Admin, removed: MemberToChange) -> dict[str, Any]:
    member, _user = removed
    await _keep_an_owner(admin, member)
    await admin.session.delete(member)
    await admin.session.commit()
    return ok(None)
