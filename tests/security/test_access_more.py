"""More of the access matrix: bad credentials of every kind on one endpoint per resource
and method kind, and billing filters naming another workspace's objects."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infra.security.roles import Role
from infra.security.tokens import issue_access_token
from tests.security.test_access import V1, fixtures
from tests.support.accounts import Accounts, bearer
from tests.support.responses import data

# One endpoint per resource and method kind (read, list, create, change, action).
REPRESENTATIVE: list[tuple[str, str, Any]] = [
    ("GET", "/Agent/{agent}", None),
    ("GET", "/Agent/", None),
    ("POST", "/Agent/", {"name": "new"}),
    ("PUT", "/Agent/{agent}", {"description": "x"}),
    ("GET", "/Tool/{tool}", None),
    ("POST", "/Tool/{tool}/test", None),
    ("GET", "/Workflow/{workflow}/versions", None),
    ("PUT", "/Workflow/{workflow}", {"description": "x"}),
    ("GET", "/Execution/{execution}", None),
    ("GET", "/Execution/{execution}/events", None),
    ("POST", "/Execution/{execution}/cancel", None),
    ("GET", "/Billing/usage", None),
    ("PUT", "/Billing/budget", {"monthly_usd": "5"}),
]


def _tampered(token: str) -> str:
    """The token with its claims rewritten (another workspace) and the old signature."""
    header, _claims, signature = token.split(".")
    claims = (
        base64.urlsafe_b64encode(b'{"sub":"1","ws":999,"jti":"x","iat":0,"exp":4102444800}')
        .rstrip(b"=")
        .decode()
    )
    return f"{header}.{claims}.{signature}"


async def _revoked_key(client: httpx.AsyncClient, accounts: Accounts) -> str:
    key = await accounts.api_key(Role.OWNER, name="to revoke")
    listed = data(await client.get(f"{V1}/ApiKey/"))["items"]
    key_id = next(k["id"] for k in listed if k["name"] == "to revoke")
    data(await client.delete(f"{V1}/ApiKey/{key_id}"))
    return key


async def test_bad_credentials_are_401_everywhere(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    ids = await fixtures(client)
    secret = accounts.settings.secret_key
    user = await accounts.user("owner@example.com")
    live, _ = issue_access_token(secret, user, 1, timedelta(minutes=5))
    expired, _ = issue_access_token(
        secret, user, 1, timedelta(minutes=5), now=datetime.now(UTC) - timedelta(hours=1)
    )
    credentials = {
        "revoked key": await _revoked_key(client, accounts),
        "expired token": expired,
        "tampered token": _tampered(live),
    }
    assert (await client.get(f"{V1}/Agent/", headers=bearer(live))).status_code == 200
    for method, path, body in REPRESENTATIVE:
        url = V1 + path.format(**ids)
        for name, value in credentials.items():
            response = await client.request(method, url, json=body, headers=bearer(value))
            assert response.status_code == 401, (method, path, name, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_another_workspaces_token_finds_nothing(
    client: httpx.AsyncClient, accounts: Accounts
) -> None:
    ids = await fixtures(client)
    other_ws = await accounts.workspace("other")
    outsider = await accounts.user("outsider@example.com", workspace_id=other_ws)
    token, _ = issue_access_token(
        accounts.settings.secret_key, outsider, other_ws, timedelta(minutes=5)
    )
    # The token names a workspace its user is not a member of: not a credential here.
    stray, _ = issue_access_token(accounts.settings.secret_key, outsider, 1, timedelta(minutes=5))
    assert (await client.get(f"{V1}/Agent/", headers=bearer(stray))).status_code == 401
    for method, path, body in REPRESENTATIVE:
        if "{" not in path:
            continue
        url = V1 + path.format(**ids)
        response = await client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == 404, (method, path, response.text)


@pytest.mark.parametrize("report", ["usage", "agent-breakdown", "usage/history"])
async def test_billing_filters_of_another_workspace_are_404(
    client: httpx.AsyncClient, accounts: Accounts, report: str
) -> None:
    mine = await fixtures(client)
    other_ws = await accounts.workspace("other")
    other = bearer(await accounts.api_key(Role.OWNER, workspace_id=other_ws))
    for name in ("agent", "workflow"):
        url = f"{V1}/Billing/{report}?{name}_id={mine[name]}"
        assert (await client.get(url)).status_code == 200
        refused = await client.get(url, headers=other)
        assert refused.status_code == 404, refused.text
        unknown = await client.get(f"{V1}/Billing/{report}?{name}_id=987654", headers=other)
        assert unknown.status_code == 404  # the same answer: existence is not revealed
