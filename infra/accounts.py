"""Principals in the database: users, memberships, API keys, WebSocket tickets.

The API (api/principal.py, the Auth, Workspace and ApiKey routes) and the ``keel``
command line (keel/accounts.py) share these; the credential formats themselves are
in ``infra.security``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.models import ApiKey, Membership, User, Workspace, WsTicket
from infra.security.api_keys import make_api_key
from infra.security.passwords import hash_password, verify_password
from infra.security.roles import Role

PrincipalType = Literal["user", "api_key", "operator"]
# last_used_at is written at most this often per key: a busy key costs no write per call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
WS_TICKET_TTL = timedelta(seconds=60)
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True)
class Principal:
    """Who acts: a user, an API key, or the operator (the command line, Temporal's UI)."""

    type: PrincipalType
    id: int | None
    name: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "name": self.name}


OPERATOR = Principal("operator", None, "operator")


@dataclass(frozen=True)
class Caller:
    """A principal acting in one workspace with one role."""

    principal: Principal
    workspace_id: int
    role: Role

    def may(self, role: Role) -> bool:
        return self.role.includes(role)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    """Why ``email`` cannot name an account, or None. Deliberately loose: the address
    is a login name here, nothing is sent to it."""
    local, at, domain = email.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in email):
        return "must be an email address such as ada@example.com"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    return None


class EmailTaken(Exception):
    pass


# -- users and memberships ----------------------------------------------------------------


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    user: User | None = await session.scalar(
        select(User).where(User.email == normalize_email(email))
    )
    return user


async def create_user(session: AsyncSession, email: str, password: str, name: str = "") -> User:
    """A new user (flushed, not committed). EmailTaken if the address has an account."""
    email = normalize_email(email)
    if await user_by_email(session, email) is not None:
        raise EmailTaken(email)
    # argon2 takes tens of milliseconds of CPU: not on the event loop.
    user = User(
        email=email, name=name, password_hash=await asyncio.to_thread(hash_password, password)
    )
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, email: str, password: str) -> User | None:
    """The user with this email and password, else None (unknown or wrong: same time)."""
    user = await user_by_email(session, email)
    ok = await asyncio.to_thread(verify_password, password, user.password_hash if user else None)
    return user if ok else None


async def membership(session: AsyncSession, user_id: int, workspace_id: int) -> Membership | None:
    found: Membership | None = await session.get(Membership, (workspace_id, user_id))
    return found


async def first_membership(session: AsyncSession, user_id: int) -> Membership | None:
    found: Membership | None = await session.scalar(
        select(Membership)
        .where(Membership.user_id == user_id)
        .order_by(Membership.workspace_id)
        .limit(1)
    )
    return found


async def owner_count(session: AsyncSession, workspace_id: int) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.workspace_id == workspace_id, Membership.role == Role.OWNER)
        )
        or 0
    )


async def lock_workspace(session: AsyncSession, workspace_id: int) -> Workspace | None:
    """The workspace row, locked until commit (MySQL), so changes to its owners are
    made one at a time and the last owner cannot be removed by two requests at once."""
    workspace: Workspace | None = await session.scalar(
        select(Workspace).where(Workspace.id == workspace_id).with_for_update()
    )
    return workspace


# -- API keys ------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession,
    secret_key: str,
    *,
    workspace_id: int,
    name: str,
    role: Role,
    created_by: Principal,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key (flushed, not committed) and its plaintext, which is never stored."""
    made = make_api_key(secret_key)
    row = ApiKey(
        workspace_id=workspace_id,
        name=name,
        role=role.value,
        prefix=made.prefix,
        key_hash=made.key_hash,
        created_by_type=created_by.type,
        created_by_id=created_by.id,
        created_by_name=created_by.name,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row, made.key


def key_usable(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


async def usable_api_key(
    session: AsyncSession, key_hash: str, now: datetime | None = None
) -> ApiKey | None:
    """The key row with this hash if it is usable (not revoked, not expired), else None.
    Notes the use, at most once a minute per key."""
    now = now or datetime.now(UTC)
    row: ApiKey | None = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if row is None or not key_usable(row, now):
        return None
    stale = now - LAST_USED_RESOLUTION
    if row.last_used_at is None or row.last_used_at <= stale:
        # Conditional, so concurrent requests of one key write it once.
        await session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == row.id,
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at <= stale),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return row


def api_key_caller(row: ApiKey) -> Caller:
    return Caller(Principal("api_key", row.id, row.name), row.workspace_id, Role(row.role))


async def caller_for_user(session: AsyncSession, user_id: int, workspace_id: int) -> Caller | None:
    """The user acting in ``workspace_id``, or None when the user is gone or no longer
    a member there (so a token dies with the membership)."""
    row = (
        await session.execute(
            select(User.email, Membership.role)
            .join(Membership, Membership.user_id == User.id)
            .where(User.id == user_id, Membership.workspace_id == workspace_id)
        )
    ).first()
    if row is None:
        return None
    return Caller(Principal("user", user_id, row.email), workspace_id, Role(row.role))


async def caller_for(
    session: AsyncSession,
    principal_type: str,
    principal_id: int,
    workspace_id: int,
    now: datetime | None = None,
) -> Caller | None:
    """A principal named by type and id (a WebSocket ticket, an open socket), as it
    stands now: None once the key is revoked or the membership removed."""
    if principal_type == "user":
        return await caller_for_user(session, principal_id, workspace_id)
    row: ApiKey | None = await session.get(ApiKey, principal_id)
    if (
        row is None
        or row.workspace_id != workspace_id
        or not key_usable(row, now or datetime.now(UTC))
    ):
        return None
    return api_key_caller(row)


# -- WebSocket tickets ------------------------------------------------------------------------


def _ticket_hash(ticket: str) -> str:
    # The ticket is 256 random bits; a plain hash keeps the stored value unusable.
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ws_ticket(
    session: AsyncSession, caller: Caller, now: datetime | None = None
) -> str:
    """A single-use ticket for ``caller`` valid for WS_TICKET_TTL (committed)."""
    now = now or datetime.now(UTC)
    assert caller.principal.id is not None, "only users and API keys get tickets"
    ticket = secrets.token_urlsafe(32)
    await session.execute(delete(WsTicket).where(WsTicket.expires_at <= now))
    session.add(
        WsTicket(
            ticket_hash=_ticket_hash(ticket),
            principal_type=caller.principal.type,
            principal_id=caller.principal.id,
            workspace_id=caller.workspace_id,
            expires_at=now + WS_TICKET_TTL,
        )
    )
    await session.commit()
    return ticket


async def redeem_ws_ticket(
    session: AsyncSession, ticket: str, now: datetime | None = None
) -> Caller | None:
    """The caller a ticket was issued to, once: the DELETE that removes the row is what
    redeems it, so of two replicas redeeming one ticket at once only one succeeds."""
    now = now or datetime.now(UTC)
    if not 20 <= len(ticket) <= 100:
        return None
    digest = _ticket_hash(ticket)
    row = (
        await session.execute(
            select(WsTicket.principal_type, WsTicket.principal_id, WsTicket.workspace_id).where(
                WsTicket.ticket_hash == digest, WsTicket.expires_at > now
            )
        )
    ).first()
    if row is None:
        await session.rollback()
        return None
    deleted = await session.execute(delete(WsTicket).where(WsTicket.ticket_hash == digest))
    await session.commit()
    if getattr(deleted, "rowcount", 0) != 1:
        return None
    return await caller_for(session, row.principal_type, row.principal_id, row.workspace_id, now)
