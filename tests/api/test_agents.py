from __future__ import annotations

import httpx

from tests.helpers import data

AGENT = {"name": "researcher", "provider": "fake", "model": "fake-echo",
         "system_prompt": "You research.", "api_key": "sk-live-supersecret-123"}


async def test_create_get_list_agent(client: httpx.AsyncClient) -> None:
    created = data(await client.post("/api/v1/Agent/", json=AGENT), 201)
    assert created["name"] == "researcher"
    assert created["api_key_set"] is True
    assert "api_key" not in created
    assert created["max_iterations"] == 8
    assert created["tool_ids"] == []
    assert created["created_at"].endswith("+00:00")

    fetched = data(await client.get(f"/api/v1/Agent/{created['id']}"))
    assert fetched == created

    for i in range(3):
        data(await client.post("/api/v1/Agent/", json={**AGENT, "name": f"writer-{i}"}), 201)
    page = data(await client.get("/api/v1/Agent/", params={"page": 2, "page_size": 2}))
    assert page["total"] == 4 and page["page"] == 2 and page["page_size"] == 2
    assert [a["name"] for a in page["items"]] == ["writer-1", "writer-2"]
    filtered = data(await client.get("/api/v1/Agent/", params={"q": "WRITER"}))
    assert filtered["total"] == 3


async def test_secret_never_returned(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/Agent/", json=AGENT)
    assert "supersecret" not in response.text
    listing = await client.get("/api/v1/Agent/")
    assert "supersecret" not in listing.text
