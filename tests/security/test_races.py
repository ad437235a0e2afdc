"""Unique-key races are 409s, never 500s: many requests at once for one name or one
publish, on SQLite and (with KEEL_TEST_MYSQL_URL) MariaDB."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.support.responses import data

CONCURRENT = 50


async def _all_at_once(send: list) -> Counter[int]:
    responses = await asyncio.gather(*send)
    for response in responses:
        body = response.json()
        assert body["code"] == (0 if response.status_code < 400 else response.status_code)
    return Counter(r.status_code for r in responses)


async def test_concurrent_publishes_of_one_workflow_give_no_5xx(client: httpx.AsyncClient) -> None:
    agent = data(
        await client.post(
            "/api/v1/Agent/", json={"name": "echo", "provider": "fake", "model": "fake-echo"}
        ),
        201,
    )
    created = data(
        await client.post(
            "/api/v1/Workflow/",
            json={
                "name": "raced",
                "definition": {
                    "nodes": [{"id": "a", "type": "agent", "agent_id": agent["id"], "input": "hi"}],
                    "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}],
                },
            },
        ),
        201,
    )
    path = f"/api/v1/Workflow/{created['id']}/publish"
    statuses = await _all_at_once([client.post(path) for _ in range(CONCURRENT)])
    assert set(statuses) <= {200, 409}, statuses
    assert statuses[200] >= 1
    versions = data(await client.get(f"/api/v1/Workflow/{created['id']}/versions"))
    assert versions["total"] == statuses[200] == 1


async def test_concurrent_creates_of_one_name_give_one_201_and_409s(
    client: httpx.AsyncClient,
) -> None:
    for path, body in (
        ("/api/v1/Agent/", {"name": "twin", "provider": "fake", "model": "fake-echo"}),
        (
            "/api/v1/Tool/",
            {"name": "twin", "type": "http", "config": {"url": "http://127.0.0.1:9/x"}},
        ),
        (
            "/api/v1/Workflow/",
            {
                "name": "twin",
                "definition": {"nodes": [], "edges": [{"from": "START", "to": "END"}]},
            },
        ),
    ):
        statuses = await _all_at_once([client.post(path, json=body) for _ in range(CONCURRENT)])
        assert statuses == Counter({201: 1, 409: CONCURRENT - 1}), (path, statuses)
