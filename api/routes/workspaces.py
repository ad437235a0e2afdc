"""/api/v1/Workspace/: the caller's workspaces, and the members of the current one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends
from sqlalchemy import Select, func, select

from api.deps import Admin, Context, Member, PageDep, Viewer
from api.errors import Conflict, Forbidden, NotFound
from api.resources import commit_unique
from api.routes.router import PrefixRouter
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

router = PrefixRouter(
    prefix="/api/v1/Workspace", tags=["Workspace"], responses=error_responses(401, 403, 422)
)


@router.get("/", summary="The caller's workspaces and its role in each")
async def list_workspaces(member: Member, page: PageDep) -> Envelope[Page[WorkspaceOut]]:
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
    return ok(Page(items=window, total=len(items), page=page.page, page_size=page.page_size))


@router.post(
    "/",
    status_code=201,
    summary="Create a workspace; the user who creates it owns it",
    responses=error_responses(409),
)
async def create_workspace(body: WorkspaceIn, member: Member) -> Envelope[WorkspaceOut]:
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


def _members(workspace_id: int) -> Select[int, str, str, str, datetime]:
    """The workspace's members, by email, as MemberOut reads them."""
    return (
        select(Membership.user_id, User.email, User.name, Membership.role, Membership.created_at)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(User.email)
    )


async def _member_out(ctx: Context, user_id: int) -> Envelope[MemberOut]:
    stmt = _members(ctx.workspace_id).where(Membership.user_id == user_id)
    return ok(MemberOut.model_validate((await ctx.session.execute(stmt)).one()))


@router.get("/members", summary="Members of the caller's workspace")
async def list_members(viewer: Viewer, page: PageDep) -> Envelope[Page[MemberOut]]:
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
    members = [MemberOut.model_validate(row) for row in rows]
    return ok(Page(items=members, total=total, page=page.page, page_size=page.page_size))


def _may_grant(caller: Caller, role: Role) -> None:
    if not caller.may(role):
        raise Forbidden(
            f"you cannot grant {role.value}: it is above your role ({caller.role.value})"
        )


def _may_touch(caller: Caller, member: Membership) -> None:
    if Role(member.role) is Role.OWNER and not caller.may(Role.OWNER):
        raise Forbidden("only an owner can change or remove an owner")


async def _member_to_change(user_id: int, admin: Admin) -> Membership:
    """The member named in the path, if this admin may change or remove them."""
    known = 1 <= user_id <= MAX_DB_ID
    member = await admin.session.get(Membership, (admin.workspace_id, user_id)) if known else None
    if member is None:
        raise NotFound(f"user {user_id} is not a member of this workspace")
    _may_touch(admin.caller, member)
    return member


MemberToChange = Annotated[Membership, Depends(_member_to_change)]


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
    summary="Add a user to the workspace (created when a password is given)",
    responses=error_responses(404, 409),
)
async def add_member(body: MemberIn, admin: Admin) -> Envelope[MemberOut]:
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
    return await _member_out(admin, user.id)


@router.put(
    "/members/{user_id}",
    summary="Change a member's role",
    responses=error_responses(404, 409),
)
async def change_member(
    body: MemberUpdate, admin: Admin, member: MemberToChange
) -> Envelope[MemberOut]:
    _may_grant(admin.caller, body.role)
    if body.role is not Role.OWNER:
        await _keep_an_owner(admin, member)
    member.role = body.role.value
    await admin.session.commit()
    return await _member_out(admin, member.user_id)


@router.delete(
    "/members/{user_id}",
    summary="Remove a member from the workspace",
    responses=error_responses(404, 409),
)
async def remove_member(admin: Admin, member: MemberToChange) -> Envelope[None]:
    await _keep_an_owner(admin, member)
    await admin.session.delete(member)
    await admin.session.commit()
    return ok(None)
