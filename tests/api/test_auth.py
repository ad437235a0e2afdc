"""Credentials: access tokens (JWT), API keys, sign-in and its rate limit."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import ApiKey
from infra.security.keys import purpose_key
from infra.security.roles import Role
from infra.security.tokens import issue_access_token
from infra.settings import Settings
from tests.support.accounts import PASSWORD, Accounts, bearer
from tests.support.responses import data, error
from tests.support.settings import app_client, make_settings

ME = "/api/v1/Auth/me"


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: object
) -> httpx.Response:
    return await client.post(
        "/api/v1/Auth/token", data={"username": email, "password": password, **extra}
    )


def unauthorized(response: httpx.Response) -> dict[str, object]:
    body = error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


# -- access tokens -------------------------------------------------------------------------


async def test_sign_in_gives_a_short_lived_token_for_the_users_workspace(
    client: httpx.AsyncClient, accounts: Accounts, settings: Settings
) -> None:
    user_id = await accounts.user("Ada@Example.com", Role.EDITOR)
    token = data(await sign_in(client, "ada@example.com"))
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == settings.access_token_ttl_s
    assert (token["workspace_id"], token["role"]) == (1, "editor")

    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert {"exp", "iat", "sub", "ws", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_s
    assert jwt.get_unverified_header(token["access_token"])["alg"] == "HS256"

    me = data(await client.get(ME, headers=bearer(token["access_token"])))
    assert me == {
        "principal": {"type": "user", "id": user_id, "name": "ada@example.com"},
        "workspace_id": 1,
        "role": "editor",
    }


async def test_unknown_user_and_wrong_password_are_the_same_401(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    await accounts.user("ada@example.com")
    wrong = unauthorized(await sign_in(client, "ada@example.com", "not the password"))
    unknown = unauthorized(await sign_in(client, "nobody@example.com", "not the password"))
    assert wrong["msg"] == unknown["msg"] == "wrong email or password"


async def test_a_token_for_another_workspace_sees_that_workspace(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    other = await accounts.workspace("other")
    user_id = await accounts.user("ada@example.com", Role.VIEWER)
    await accounts.member(user_id, Role.ADMIN, other)
    token = data(await sign_in(client, "ada@example.com", workspace_id=str(other)))
    assert (token["workspace_id"], token["role"]) == (other, "admin")
    me = data(await client.get(ME, headers=bearer(token["access_token"])))
    assert (me["workspace_id"], me["role"]) == (other, "admin")

    # Not a member there: no token for it.
    third = await accounts.workspace("third")
    error(await sign_in(client, "ada@example.com", workspace_id=str(third)), 403)


async def test_a_token_dies_with_its_membership(
    client: httpx.AsyncClient, accounts: Accounts, settings: Settings
) -> None:
    other = await accounts.workspace("other")
    user_id = await accounts.user("ada@example.com", Role.EDITOR)
    # A valid signature for a workspace the user is not a member of is still refused.
    token, _ = issue_access_token(settings.secret_key, user_id, other, timedelta(minutes=5))
    body = unauthorized(await client.get(ME, headers=bearer(token)))
    assert "no longer a member" in str(body["msg"])


@pytest.mark.parametrize(
    "how",
    [
        "expired",
        "tampered",
        "alg none",
        "alg HS512",
        "other key",
        "no ws claim",
        "garbage",
        "empty",
    ],
)
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient, accounts: Accounts, settings: Settings, how: str
) -> None:
    user_id = await accounts.user("ada@example.com")
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "ws": 1,
        "jti": "x",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    key = purpose_key(settings.secret_key, "jwt")
    if how == "expired":
        token, _ = issue_access_token(
            settings.secret_key, user_id, 1, timedelta(minutes=5), now=now - timedelta(minutes=10)
        )
    elif how == "tampered":
        good, _ = issue_access_token(settings.secret_key, user_id, 1, timedelta(minutes=5))
        head, body, signature = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        claims["ws"] = 2
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{forged}.{signature}"
    elif how == "alg none":
        token = jwt.encode(payload, None, algorithm="none")  # type: ignore[arg-type]
    elif how == "alg HS512":
        token = jwt.encode(payload, key + key, algorithm="HS512")  # 64 bytes, as HS512 wants
    elif how == "other key":
        token = jwt.encode(payload, b"k" * 32, algorithm="HS256")
    elif how == "no ws claim":
        token = jwt.encode({k: v for k, v in payload.items() if k != "ws"}, key, algorithm="HS256")
    elif how == "garbage":
        token = "not-a-jwt"
    else:
        token = ""
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    body = unauthorized(response)
    if how == "expired":
        assert "expired" in str(body["msg"])


async def test_no_credential_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get(ME, headers={"Authorization": ""})
    unauthorized(response)
    assert response.headers["www-authenticate"] == "Bearer"
    unauthorized(await client.get(ME, headers={"Authorization": "Basic YTpi"}))


# -- API keys ----------------------------------------------------------------------------------


async def test_an_api_key_is_its_workspaces_principal(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    other = await accounts.workspace("other")
    key = await accounts.api_key(Role.EDITOR, workspace_id=other, name="ci")
    me = data(await client.get(ME, headers=bearer(key)))
    assert me["principal"]["type"] == "api_key" and me["principal"]["name"] == "ci"
    assert (me["workspace_id"], me["role"]) == (other, "editor")


@pytest.mark.parametrize("how", ["revoked", "expired", "unknown", "malformed"])
async def test_bad_api_keys_are_401(
    client: httpx.AsyncClient, accounts: Accounts, db: AsyncEngine, how: str
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    key = await accounts.api_key(Role.OWNER)
    if how == "revoked":
        async with db.begin() as conn:
            await conn.execute(update(ApiKey).values(revoked_at=past))
    elif how == "expired":
        async with db.begin() as conn:
            await conn.execute(update(ApiKey).values(expires_at=past))
    elif how == "unknown":
        key = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    else:
        key = "keel_short"
    unauthorized(await client.get(ME, headers=bearer(key)))


async def test_last_used_at_is_written_at_most_once_a_minute(
    settings: Settings, accounts: Accounts, db: AsyncEngine
) -> None:
    key = await accounts.api_key(Role.VIEWER, name="watched")
    # No credential cache: every request reads the key's row (a cached key is not read).
    async with app_client(settings.model_copy(update={"credential_cache_s": 0}), key) as client:
        await _last_used_is_written_at_most_once_a_minute(client, key, db)


async def _last_used_is_written_at_most_once_a_minute(
    client: httpx.AsyncClient, key: str, db: AsyncEngine
) -> None:
    async def last_used() -> datetime | None:
        async with db.connect() as conn:
            return await conn.scalar(select(ApiKey.last_used_at).where(ApiKey.name == "watched"))

    assert await last_used() is None
    data(await client.get(ME, headers=bearer(key)))
    first = await last_used()
    assert first is not None
    data(await client.get(ME, headers=bearer(key)))
    assert await last_used() == first  # within the minute: not written again

    earlier = first - timedelta(minutes=2)
    async with db.begin() as conn:
        await conn.execute(update(ApiKey).values(last_used_at=earlier))
    data(await client.get(ME, headers=bearer(key)))
    later = await last_used()
    assert later is not None and later > first


async def test_only_a_hash_of_the_key_is_stored(
    client: httpx.AsyncClient, accounts: Accounts, db: AsyncEngine
) -> None:
    key = await accounts.api_key(Role.OWNER)
    from tests.support.database import dump_database

    dump = await dump_database(db)
    assert key not in dump and key[12:] not in dump
    assert key[:12] in dump  # the display prefix


# -- sign-in rate limit --------------------------------------------------------------------------


async def test_repeated_failed_sign_ins_get_429(clean_db: str, tmp_path: Path) -> None:
    settings = make_settings(clean_db, tmp_path, login_max_failures=3, login_lockout_s=600)
    accounts = Accounts(settings)
    try:
        await accounts.user("ada@example.com")
        async with app_client(settings) as client:
            for _ in range(3):
                unauthorized(await sign_in(client, "ada@example.com", "wrong password"))
            # Now even the right password waits: the attacker cannot tell it was right.
            limited = await sign_in(client, "ADA@example.com")
            error(limited, 429)
            assert 1 <= int(limited.headers["retry-after"]) <= 600
            # Unknown emails are limited the same way (nothing reveals which exist).
            for _ in range(3):
                unauthorized(await sign_in(client, "ghost@example.com", "x"))
            error(await sign_in(client, "ghost@example.com", "x"), 429)
            # Other users are not affected.
            await accounts.user("bob@example.com")
            data(await sign_in(client, "bob@example.com"))
    finally:
        await accounts.close()


async def test_a_successful_sign_in_clears_the_failures(clean_db: str, tmp_path: Path) -> None:
    settings = make_settings(clean_db, tmp_path, login_max_failures=2)
    accounts = Accounts(settings)
    try:
        await accounts.user("ada@example.com")
        async with app_client(settings) as client:
            unauthorized(await sign_in(client, "ada@example.com", "wrong password"))
            data(await sign_in(client, "ada@example.com"))
            unauthorized(await sign_in(client, "ada@example.com", "wrong password"))
            data(await sign_in(client, "ada@example.com"))
    finally:
        await accounts.close()


async def test_openapi_declares_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert spec["paths"]["/api/v1/Auth/me"]["get"]["security"] == [{"bearer": []}]
