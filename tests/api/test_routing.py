"""Every documented operation reaches its route, through routers that turn requests away
by their prefix (api/routes/router.py)."""

from __future__ import annotations

import re

import httpx

NO_CREDENTIAL = {"Authorization": ""}


async def test_every_documented_operation_reaches_its_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    tried = 0
    for path, operations in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            response = await client.request(method.upper(), concrete, headers=NO_CREDENTIAL)
            # Found: the route answers (401 without a credential, or its own answer for a
            # public route); a path or method no router took would be 404 or 405.
            assert response.status_code not in (404, 405), (method, path, response.text)
            tried += 1
    assert tried >= 40, tried


async def test_a_path_no_router_serves_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/Agents/1", "/api/v1/Agent/1/nothing", "/api/v2/Agent/1", "/nowhere"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == 404, path
