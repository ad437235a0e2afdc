"""Access control over the real app: each endpoint x each role gives the contract's
status, another workspace's objects are 404, and bad input is a 4xx that stores nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from infra.security.roles import Role
from tests.support.accounts import Accounts, bearer
from tests.support.responses import data

V1 = "/api/v1"


def made(response: httpx.Response) -> Any:
    return data(response, 201)


BIG = 2**63


async def fixtures(client: httpx.AsyncClient) -> dict[str, int]:
    agent = made(await client.post(f"{V1}/Agent/", json={"name": "a"}))["id"]
    tool = made(
        await client.post(
            f"{V1}/Tool/",
            json={"name": "t", "type": "http", "config": {"url": "http://127.0.0.1:1/x"}},
        )
    )["id"]
    workflow = made(
        await client.post(
            f"{V1}/Workflow/",
            json={
                "name": "w",
                "definition": {
                    "nodes": [{"id": "n", "type": "agent", "agent_id": agent}],
                    "edges": [{"from": "START", "to": "n"}, {"from": "n", "to": "END"}],
                },
            },
        )
    )["id"]
    data(await client.post(f"{V1}/Workflow/{workflow}/publish"))
    execution = made(await client.post(f"{V1}/Execution/", json={"workflow_id": workflow}))["id"]
    return {"agent": agent, "tool": tool, "workflow": workflow, "execution": execution}


# (method, path, body, least role that may); paths name the objects made above.
ENDPOINTS: list[tuple[str, str, Any, Role]] = [
    ("GET", "/Agent/", None, Role.VIEWER),
    ("GET", "/Agent/{agent}", None, Role.VIEWER),
    ("POST", "/Agent/", {"name": "new"}, Role.EDITOR),
    ("PUT", "/Agent/{agent}", {"description": "x"}, Role.EDITOR),
    ("GET", "/Tool/", None, Role.VIEWER),
    ("GET", "/Tool/{tool}", None, Role.VIEWER),
    ("PUT", "/Tool/{tool}", {"description": "x"}, Role.EDITOR),
    ("POST", "/Tool/{tool}/test", None, Role.EDITOR),
    (
        "POST",
        "/Tool/",
        {"name": "s", "type": "mcp", "config": {"transport": "stdio", "command": "server"}},
        Role.ADMIN,
    ),
    ("GET", "/Workflow/", None, Role.VIEWER),
    ("GET", "/Workflow/{workflow}/versions", None, Role.VIEWER),
    ("GET", "/Workflow/{workflow}/versions/1", None, Role.VIEWER),
    ("PUT", "/Workflow/{workflow}", {"description": "x"}, Role.EDITOR),
    ("GET", "/Execution/", None, Role.VIEWER),
    ("GET", "/Execution/{execution}", None, Role.VIEWER),
    ("GET", "/Execution/{execution}/events", None, Role.VIEWER),
    ("POST", "/Execution/", {"workflow_id": "{workflow}"}, Role.EDITOR),
    ("POST", "/Execution/{execution}/cancel", None, Role.EDITOR),
    ("GET", "/Billing/usage", None, Role.VIEWER),
    ("GET", "/Billing/agent-breakdown", None, Role.VIEWER),
    ("GET", "/Billing/usage/history", None, Role.VIEWER),
    ("GET", "/Billing/budget", None, Role.VIEWER),
    ("PUT", "/Billing/budget", {"monthly_usd": "5"}, Role.ADMIN),
]
ROLES = [Role.VIEWER, Role.EDITOR, Role.ADMIN, Role.OWNER]


def _fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def test_role_matrix(client: httpx.AsyncClient, accounts: Accounts) -> None:
    ids = await fixtures(client)
    keys = {role: bearer(await accounts.api_key(role, name=role.value)) for role in ROLES}
    for method, path, body, least in ENDPOINTS:
        url = V1 + path.format(**ids)
        sent = _fill(body, ids)
        anonymous = await client.request(method, url, json=sent, headers={"Authorization": ""})
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        for role in ROLES:
            response = await client.request(method, url, json=sent, headers=keys[role])
            if role.includes(least):
                assert response.status_code < 400 or response.status_code in (409, 422), (
                    method,
                    path,
                    role,
                    response.json(),
                )
            else:
                assert response.status_code == 403, (method, path, role, response.json())


@pytest.mark.parametrize("credential", ["tampered", "alg none", "garbage key", "expired key"])
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, accounts: Accounts, credential: str
) -> None:
    import base64
    import json
    from datetime import UTC, datetime, timedelta

    if credential == "tampered":
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        claims = base64.urlsafe_b64encode(
            json.dumps({"sub": "1", "ws": 1, "exp": 4102444800}).encode()
        ).rstrip(b"=")
        value = f"{header.decode()}.{claims.decode()}.{'A' * 43}"
    elif credential == "alg none":
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
        claims = base64.urlsafe_b64encode(b'{"sub":"1","exp":4102444800}').rstrip(b"=")
        value = f"{header.decode()}.{claims.decode()}."
    elif credential == "garbage key":
        value = "keel_" + "x" * 43
    else:
        value = await accounts.api_key(
            Role.OWNER, name="old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
    response = await client.get(f"{V1}/Agent/", headers=bearer(value))
    assert response.status_code == 401


async def test_workspaces_see_nothing_of_each_other(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    mine = await fixtures(client)
    other_ws = await accounts.workspace("other")
    other = httpx.AsyncClient(
        transport=client._transport,
        base_url=str(client.base_url),
        headers=bearer(await accounts.api_key(Role.OWNER, workspace_id=other_ws)),
    )
    async with other:
        theirs = await fixtures(other)  # the same names: unique per workspace only
        for kind, path in (
            ("agent", "Agent"),
            ("tool", "Tool"),
            ("workflow", "Workflow"),
            ("execution", "Execution"),
        ):
            assert (await other.get(f"{V1}/{path}/{mine[kind]}")).status_code == 404
            assert (await client.get(f"{V1}/{path}/{theirs[kind]}")).status_code == 404
            listed = data(await other.get(f"{V1}/{path}/"))["items"]
            assert {i["id"] for i in listed} == {theirs[kind]}
        assert (await other.post(f"{V1}/Tool/{mine['tool']}/test")).status_code == 404
        assert (await other.get(f"{V1}/Execution/{mine['execution']}/events")).status_code == 404
        assert (
            await other.post(f"{V1}/Execution/", json={"workflow_id": mine["workflow"]})
        ).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/Agent/{big}",
        "/Tool/{big}",
        "/Workflow/{big}",
        "/Workflow/{big}/versions",
        "/Workflow/1/versions/{big}",
        "/Execution/{big}",
        "/Execution/{big}/events",
        "/Execution/1/events?after={big}",
        "/Execution/?workflow_id={big}",
        "/Billing/usage?agent_id={big}",
    ],
)
async def test_integers_beyond_the_database_are_4xx(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(V1 + path.format(big=BIG))
    assert response.status_code in (404, 422), response.text


async def test_text_that_cannot_be_stored_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    ids = await fixtures(client)
    surrogate = '{"workflow_id": ' + str(ids["workflow"]) + ', "input": {"x": "\\ud800"}}'
    response = await client.post(
        f"{V1}/Execution/", content=surrogate, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    nul = await client.post(f"{V1}/Agent/", json={"name": "a\x00b"})
    assert nul.status_code == 422
    listed = data(await client.get(f"{V1}/Execution/"))
    assert listed["total"] == 1  # only the one made above; the list still answers
    assert data(await client.get(f"{V1}/Agent/"))["total"] == 1


async def test_a_repointed_tool_does_not_carry_its_secret(client: httpx.AsyncClient) -> None:
    tool = made(
        await client.post(
            f"{V1}/Tool/",
            json={
                "name": "t",
                "type": "http",
                "config": {
                    "url": "http://127.0.0.1:1/x",
                    "headers": {"Authorization": "Bearer s3cret-value"},
                },
            },
        )
    )
    shown = tool["config"]
    assert shown["headers"]["Authorization"] == {"value": "***", "secret": True}  # implicit
    moved = await client.put(
        f"{V1}/Tool/{tool['id']}", json={"config": {**shown, "url": "http://127.0.0.1:2/steal"}}
    )
    assert moved.status_code == 422 and "destination" in moved.json()["msg"]
    same = await client.put(f"{V1}/Tool/{tool['id']}", json={"config": {**shown, "timeout_s": 5}})
    assert same.status_code == 200  # same destination: "***" keeps the stored value


async def test_a_repointed_agent_drops_its_key(client: httpx.AsyncClient) -> None:
    agent = made(
        await client.post(
            f"{V1}/Agent/",
            json={
                "name": "a",
                "provider": "openai",
                "model": "m",
                "base_url": "http://127.0.0.1:1/v1",
                "api_key": "sk-secret",
            },
        )
    )
    assert agent["api_key_set"]
    moved = data(
        await client.put(f"{V1}/Agent/{agent['id']}", json={"base_url": "http://127.0.0.1:2/v1"})
    )
    assert not moved["api_key_set"]
    masked = await client.put(f"{V1}/Agent/{agent['id']}", json={"api_key": "***"})
    assert masked.status_code == 422


async def test_stdio_tools_are_for_admins_and_inline_code_is_refused(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    editor = bearer(await accounts.api_key(Role.EDITOR, name="editor"))
    stdio = {
        "name": "s",
        "type": "mcp",
        "config": {"transport": "stdio", "command": "python3", "args": ["-c", "import os"]},
    }
    assert (await client.post(f"{V1}/Tool/", json=stdio, headers=editor)).status_code == 403
    refused = await client.post(f"{V1}/Tool/", json=stdio)
    assert refused.status_code == 422 and "command line" in refused.json()["msg"]
