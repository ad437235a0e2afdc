"""Roles on the Workspace and ApiKey endpoints; members and the last owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from infra.security.roles import Role
from tests.support.accounts import Accounts, bearer
from tests.support.responses import data, error

KEYS = "/api/v1/ApiKey/"
MEMBERS = "/api/v1/Workspace/members"


async def key_for(accounts: Accounts, role: Role, workspace_id: int = 1) -> dict[str, str]:
    return bearer(await accounts.api_key(role, workspace_id=workspace_id, name=f"{role} key"))


@pytest.mark.parametrize(
    "role,status", [(Role.VIEWER, 403), (Role.EDITOR, 403), (Role.ADMIN, 201), (Role.OWNER, 201)]
)
async def test_api_keys_are_for_admins(
    client: httpx.AsyncClient, accounts: Accounts, role: Role, status: int
) -> None:
    headers = await key_for(accounts, role)
    response = await client.post(KEYS, json={"name": "ci", "role": "viewer"}, headers=headers)
    assert response.status_code == status, response.json()
    listed = await client.get(KEYS, headers=headers)
    assert listed.status_code == (200 if status == 201 else 403)
    error(await client.get(KEYS, headers={"Authorization": ""}), 401)


async def test_a_key_is_shown_once_and_works_until_revoked(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    admin = await key_for(accounts, Role.ADMIN)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    made = data(
        await client.post(
            KEYS, json={"name": "deploy", "role": "editor", "expires_at": expires}, headers=admin
        ),
        201,
    )
    assert made["key"].startswith("keel_") and made["key"].startswith(made["prefix"])
    assert made["created_by"] == {"type": "api_key", "id": made["id"] - 1, "name": "admin key"}
    shown = data(await client.get(f"{KEYS}{made['id']}", headers=admin))
    assert "key" not in shown and shown["prefix"] == made["prefix"]
    assert shown["revoked_at"] is None and shown["expires_at"] is not None

    me = data(await client.get("/api/v1/Auth/me", headers=bearer(made["key"])))
    assert me["role"] == "editor"

    revoked = data(await client.delete(f"{KEYS}{made['id']}", headers=admin))
    assert revoked["revoked_at"] is not None
    error(await client.get("/api/v1/Auth/me", headers=bearer(made["key"])), 401)


async def test_a_key_cannot_outrank_its_creator(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    admin = await key_for(accounts, Role.ADMIN)
    error(await client.post(KEYS, json={"name": "x", "role": "owner"}, headers=admin), 403)
    owner_key = await accounts.api_key(Role.OWNER, name="the owner's")
    owner_key_id = data(await client.get("/api/v1/Auth/me", headers=bearer(owner_key)))[
        "principal"
    ]["id"]
    error(await client.delete(f"{KEYS}{owner_key_id}", headers=admin), 403)


async def test_keys_of_another_workspace_are_404(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    other = await accounts.workspace("other")
    theirs = await key_for(accounts, Role.OWNER, other)
    their_id = data(await client.get("/api/v1/Auth/me", headers=theirs))["principal"]["id"]
    mine = await key_for(accounts, Role.OWNER)
    error(await client.get(f"{KEYS}{their_id}", headers=mine), 404)
    error(await client.delete(f"{KEYS}{their_id}", headers=mine), 404)
    assert [k["id"] for k in data(await client.get(KEYS, headers=mine))["items"]] != [their_id]
    error(await client.get(f"{KEYS}{2**63}", headers=mine), 404)


async def test_expiry_in_the_past_is_422(client: httpx.AsyncClient, accounts: Accounts) -> None:
    admin = await key_for(accounts, Role.ADMIN)
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    error(
        await client.post(
            KEYS, json={"name": "x", "role": "viewer", "expires_at": past}, headers=admin
        ),
        422,
    )
    error(await client.post(KEYS, json={"name": "x", "role": "boss"}, headers=admin), 422)


async def test_members_are_managed_by_admins(client: httpx.AsyncClient, accounts: Accounts) -> None:
    owner_id = await accounts.user("owner@example.com", Role.OWNER)
    admin = await key_for(accounts, Role.ADMIN)
    editor = await key_for(accounts, Role.EDITOR)

    body = {"email": "new@example.com", "role": "editor", "password": "long enough password"}
    error(await client.post(MEMBERS, json=body, headers=editor), 403)
    added = data(await client.post(MEMBERS, json=body, headers=admin), 201)
    assert (added["email"], added["role"]) == ("new@example.com", "editor")
    # The new user can sign in with that password.
    signed_in = await client.post(
        "/api/v1/Auth/token",
        data={"username": "new@example.com", "password": "long enough password"},
    )
    assert data(signed_in)["role"] == "editor"

    error(await client.post(MEMBERS, json={**body, "password": None}, headers=admin), 409)
    error(
        await client.post(
            MEMBERS, json={"email": "ghost@example.com", "role": "viewer"}, headers=admin
        ),
        404,
    )
    error(
        await client.post(
            MEMBERS,
            json={"email": "x@example.com", "role": "owner", "password": "long enough password"},
            headers=admin,
        ),
        403,
    )

    listed = data(await client.get(MEMBERS, headers=editor))
    assert {m["email"] for m in listed["items"]} == {"new@example.com", "owner@example.com"}

    promoted = data(
        await client.put(f"{MEMBERS}/{added['user_id']}", json={"role": "admin"}, headers=admin)
    )
    assert promoted["role"] == "admin"
    # An admin cannot demote or remove an owner.
    error(await client.put(f"{MEMBERS}/{owner_id}", json={"role": "viewer"}, headers=admin), 403)
    error(await client.delete(f"{MEMBERS}/{owner_id}", headers=admin), 403)
    data(await client.delete(f"{MEMBERS}/{added['user_id']}", headers=admin))
    error(await client.delete(f"{MEMBERS}/{added['user_id']}", headers=admin), 404)
    error(await client.delete(f"{MEMBERS}/{2**63}", headers=admin), 404)


async def test_the_last_owner_stays(client: httpx.AsyncClient, accounts: Accounts) -> None:
    owner_id = await accounts.user("owner@example.com", Role.OWNER)
    owner = await key_for(accounts, Role.OWNER)
    error(await client.put(f"{MEMBERS}/{owner_id}", json={"role": "admin"}, headers=owner), 409)
    error(await client.delete(f"{MEMBERS}/{owner_id}", headers=owner), 409)

    second = data(
        await client.post(
            MEMBERS,
            json={"email": "two@example.com", "role": "owner", "password": "long enough password"},
            headers=owner,
        ),
        201,
    )
    data(await client.put(f"{MEMBERS}/{owner_id}", json={"role": "admin"}, headers=owner))
    error(await client.delete(f"{MEMBERS}/{second['user_id']}", headers=owner), 409)


async def test_workspaces_a_user_creates_and_belongs_to(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    await accounts.user("ada@example.com", Role.VIEWER)
    token = data(
        await client.post(
            "/api/v1/Auth/token",
            data={"username": "ada@example.com", "password": "correct horse battery staple"},
        )
    )
    headers = bearer(token["access_token"])
    made = data(
        await client.post("/api/v1/Workspace/", json={"name": "research"}, headers=headers), 201
    )
    assert made["role"] == "owner"
    error(await client.post("/api/v1/Workspace/", json={"name": "Research"}, headers=headers), 409)
    mine = data(await client.get("/api/v1/Workspace/", headers=headers))
    assert [(w["name"], w["role"]) for w in mine["items"]] == [
        ("default", "viewer"),
        ("research", "owner"),
    ]

    # An API key sees its one workspace and cannot create one.
    key = await key_for(accounts, Role.OWNER)
    assert [
        w["id"] for w in data(await client.get("/api/v1/Workspace/", headers=key))["items"]
    ] == [1]
    error(await client.post("/api/v1/Workspace/", json={"name": "x"}, headers=key), 403)
    error(
        await client.post("/api/v1/Workspace/", json={"name": "bad\x00name"}, headers=headers), 422
    )
