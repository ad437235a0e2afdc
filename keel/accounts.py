"""Account commands: the first owner of a fresh installation, and users and API keys
for production.

    keel user create EMAIL --role owner [--workspace 1] [--password-stdin]
    keel apikey create NAME --role editor [--workspace 1] [--expires-days 90]
    keel migrate --bootstrap     (what ``keel up`` runs: migrations, then the first owner)

Passwords and keys are printed once, to stdout; they are never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from infra.accounts import (
    OPERATOR,
    EmailTaken,
    create_api_key,
    create_user,
    email_problem,
    user_by_email,
)
from infra.db import create_engine, session_factory
from infra.models import DEFAULT_WORKSPACE_ID, ApiKey, Membership, User, Workspace
from infra.security.files import write_private
from infra.security.roles import Role
from infra.settings import Settings

BOOTSTRAP_EMAIL = "owner@localhost"
CREDENTIALS_FILE = "credentials"


@dataclass(frozen=True)
class FirstCredentials:
    email: str
    password: str
    api_key: str

    def text(self) -> str:
        return (
            "# Keel's first credentials: the owner of workspace 1. Shown once; keep them\n"
            "# somewhere safe and delete this file.\n"
            f"KEEL_OWNER_EMAIL={self.email}\n"
            f"KEEL_OWNER_PASSWORD={self.password}\n"
            f"KEEL_API_KEY={self.api_key}\n"
        )


async def _bootstrap(settings: Settings) -> FirstCredentials | None:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with session_factory(engine)() as session:
            anyone = await session.scalar(
                select(func.count()).select_from(User)
            ) or await session.scalar(select(func.count()).select_from(ApiKey))
            if anyone:
                return None
            password = secrets.token_urlsafe(18)
            try:
                user = await create_user(session, BOOTSTRAP_EMAIL, password, name="owner")
                session.add(
                    Membership(
                        workspace_id=DEFAULT_WORKSPACE_ID, user_id=user.id, role=Role.OWNER.value
                    )
                )
                _row, key = await create_api_key(
                    session,
                    settings.secret_key,
                    workspace_id=DEFAULT_WORKSPACE_ID,
                    name="first owner key",
                    role=Role.OWNER,
                    created_by=OPERATOR,
                )
                await session.commit()
            except (EmailTaken, IntegrityError):
                return None  # another process bootstrapped at the same moment
            return FirstCredentials(BOOTSTRAP_EMAIL, password, key)
    finally:
        await engine.dispose()


def bootstrap(settings: Settings) -> FirstCredentials | None:
    """On an installation with no user and no API key: the owner of the default
    workspace and an owner API key, written to ``<data dir>/credentials`` (0600) and
    printed once. None (and nothing printed) otherwise."""
    made = asyncio.run(_bootstrap(settings))
    if made is None:
        return None
    path = credentials_path(settings)
    write_private(path, made.text())
    sys.stdout.write(
        "\nFirst start: Keel made the owner of workspace 1. These are shown only now\n"
        f"(and saved in {path}, readable only by you):\n\n"
        f"  email     {made.email}\n"
        f"  password  {made.password}\n"
        f"  API key   {made.api_key}\n\n"
        f"  export KEEL_API_KEY={made.api_key}\n"
        '  curl -H "Authorization: Bearer $KEEL_API_KEY" '
        f"http://{settings.api_host}:{settings.api_port}/api/v1/Auth/me\n\n"
    )
    sys.stdout.flush()
    return made


def credentials_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / CREDENTIALS_FILE


# -- keel user create / keel apikey create -----------------------------------------------------


def _fail(message: str) -> int:
    sys.stderr.write(f"keel: {message}\n")
    return 1


async def _workspace_exists(session: AsyncSession, workspace_id: int) -> bool:
    return await session.get(Workspace, workspace_id) is not None


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    problem = email_problem(args.email)
    if problem:
        return _fail(f"EMAIL {problem}")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            return _fail("the password must be at least 8 characters")
    else:
        password = secrets.token_urlsafe(18)

    async def create() -> tuple[str | None, bool]:
        """(what went wrong, or None; whether the user is new)."""
        engine = create_engine(settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session:
                if not await _workspace_exists(session, args.workspace):
                    return f"workspace {args.workspace} does not exist", False
                user = await user_by_email(session, args.email)
                new = user is None
                if user is None:
                    user = await create_user(session, args.email, password, name=args.name)
                elif await session.get(Membership, (args.workspace, user.id)) is not None:
                    return f"{user.email} is already a member of workspace {args.workspace}", False
                session.add(
                    Membership(workspace_id=args.workspace, user_id=user.id, role=args.role)
                )
                await session.commit()
                return None, new
        finally:
            await engine.dispose()

    error, new = asyncio.run(create())
    if error:
        return _fail(error)
    sys.stdout.write(f"{args.email.strip().lower()} is {args.role} of workspace {args.workspace}\n")
    if new and not args.password_stdin:
        sys.stdout.write(f"password: {password}\n")
    return 0


def cmd_apikey(settings: Settings, args: argparse.Namespace) -> int:
    expires_at = (
        datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
    )

    async def create() -> tuple[str | None, str]:
        engine = create_engine(settings.resolved_database_url)
        try:
            async with session_factory(engine)() as session:
                if not await _workspace_exists(session, args.workspace):
                    return None, f"workspace {args.workspace} does not exist"
                _row, key = await create_api_key(
                    session,
                    settings.secret_key,
                    workspace_id=args.workspace,
                    name=args.name,
                    role=Role(args.role),
                    created_by=OPERATOR,
                    expires_at=expires_at,
                )
                await session.commit()
                return key, ""
        finally:
            await engine.dispose()

    key, error = asyncio.run(create())
    if key is None:
        return _fail(error)
    sys.stdout.write(f"{key}\n")
    return 0


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments of the account commands (and ``migrate --bootstrap``)."""
    roles = [role.value for role in Role]
    if name == "migrate":
        parser.add_argument(
            "--bootstrap",
            action="store_true",
            help="on an installation with no user, also create the owner of "
            "workspace 1 and an owner API key, print them once and save "
            "them in <data dir>/credentials (what `keel up` does)",
        )
    elif name == "user":
        parser.add_argument("action", choices=["create"])
        parser.add_argument("email")
        parser.add_argument("--role", choices=roles, default=Role.VIEWER.value)
        parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_ID, metavar="ID")
        parser.add_argument("--name", default="", help="a display name")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from stdin (else one is generated and printed once)",
        )
    elif name == "apikey":
        parser.add_argument("action", choices=["create"])
        parser.add_argument("name", help="what the key is for, e.g. 'ci'")
        parser.add_argument("--role", choices=roles, required=True)
        parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_ID, metavar="ID")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=0,
            metavar="DAYS",
            help="the key stops working after this many days (0: never)",
        )


COMMANDS = {
    "user": (
        cmd_user,
        "create a user (`keel user create EMAIL --role owner`), made a "
        "member of a workspace; prints a generated password once",
    ),
    "apikey": (
        cmd_apikey,
        "create an API key (`keel apikey create NAME --role editor`); prints the key once",
    ),
}
