from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import Agent
from infra.secrets import decrypt
from infra.settings import Settings
from tests.support.database import dump_database
from tests.support.responses import data, error
from tests.support.settings import app_client, make_settings

AGENT = {
    "name": "researcher",
    "provider": "fake",
    "model": "fake-echo",
    "system_prompt": "You research.",
    "api_key": "sk-live-supersecret-123",
}
URL = "/api/v1/Agent/"


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    return data(await client.post(URL, json={"name": "agent", **fields}), 201)


async def make_tool(client: httpx.AsyncClient, name: str) -> int:
    body = {"name": name, "type": "http", "config": {"url": "http://127.0.0.1:9/x"}}
    return int(data(await client.post("/api/v1/Tool/", json=body), 201)["id"])


async def test_create_get_list_agent(client: httpx.AsyncClient) -> None:
    created = data(await client.post(URL, json=AGENT), 201)
    assert created["name"] == "researcher"
    assert created["api_key_set"] is True
    assert "api_key" not in created
    assert created["max_iterations"] == 8
    assert created["tool_ids"] == []
    assert created["created_at"].endswith("+00:00")

    fetched = data(await client.get(f"{URL}{created['id']}"))
    assert fetched == created

    for i in range(3):
        data(await client.post(URL, json={**AGENT, "name": f"writer-{i}"}), 201)
    page = data(await client.get(URL, params={"page": 2, "page_size": 2}))
    assert page["total"] == 4 and page["page"] == 2 and page["page_size"] == 2
    assert [a["name"] for a in page["items"]] == ["writer-1", "writer-2"]
    filtered = data(await client.get(URL, params={"q": "WRITER"}))
    assert filtered["total"] == 3


async def test_secret_never_returned(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=AGENT)
    assert "supersecret" not in response.text
    listing = await client.get(URL)
    assert "supersecret" not in listing.text


async def test_create_envelope_and_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json={"name": "minimal"})
    assert response.status_code == 201
    body = response.json()
    assert body["code"] == 0 and body["msg"] == "success"
    agent = body["data"]
    assert isinstance(agent["id"], int)
    assert {
        k: agent[k]
        for k in (
            "provider",
            "model",
            "description",
            "base_url",
            "api_key_set",
            "system_prompt",
            "temperature",
            "max_tokens",
            "metadata",
        )
    } == {
        "provider": "fake",
        "model": "fake-echo",
        "description": "",
        "base_url": None,
        "api_key_set": False,
        "system_prompt": "",
        "temperature": None,
        "max_tokens": None,
        "metadata": {},
    }
    assert agent["updated_at"].endswith("+00:00")


async def test_every_field_round_trips(client: httpx.AsyncClient) -> None:
    full = {
        "name": "full",
        "description": "does everything",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": "http://localhost:11434/v1",
        "api_key": "k",
        "system_prompt": "Be brief.",
        "temperature": 0.7,
        "max_tokens": 512,
        "max_iterations": 3,
        "metadata": {"team": "research", "tags": ["a", 1, None]},
    }
    created = await create(client, **full)
    fetched = data(await client.get(f"{URL}{created['id']}"))
    expected = {k: v for k, v in full.items() if k != "api_key"}
    assert {k: fetched[k] for k in expected} == expected
    assert fetched["api_key_set"] is True


async def test_pagination_bounds(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(client, name=f"agent-{i}")
    for bad in ({"page_size": 0}, {"page_size": 101}, {"page": 0}, {"page": "first"}):
        body = error(await client.get(URL, params=bad), 422)
        assert body["data"][0]["loc"] == ["query", next(iter(bad))]
    everything = data(await client.get(URL, params={"page_size": 100}))
    assert everything["total"] == 5 and len(everything["items"]) == 5
    default = data(await client.get(URL))
    assert default["page"] == 1 and default["page_size"] == 20
    last = data(await client.get(URL, params={"page": 3, "page_size": 2}))
    assert [a["name"] for a in last["items"]] == ["agent-4"]
    beyond = data(await client.get(URL, params={"page": 4, "page_size": 2}))
    assert beyond == {"items": [], "total": 5, "page": 4, "page_size": 2}
    far = data(await client.get(URL, params={"page": 10**15, "page_size": 100}))
    assert far["items"] == [] and far["total"] == 5


async def test_q_filter_is_case_insensitive_and_literal(client: httpx.AsyncClient) -> None:
    for name in ("Alpha_One", "alphaXone", "beta 100%", "beta 1000"):
        await create(client, name=name)
    assert data(await client.get(URL, params={"q": "ALPHA"}))["total"] == 2
    # LIKE wildcards in q are plain characters.
    assert [a["name"] for a in data(await client.get(URL, params={"q": "a_o"}))["items"]] == [
        "Alpha_One"
    ]
    assert [a["name"] for a in data(await client.get(URL, params={"q": "0%"}))["items"]] == [
        "beta 100%"
    ]
    assert data(await client.get(URL, params={"q": "nobody"}))["total"] == 0


async def test_partial_update_changes_only_what_is_sent(client: httpx.AsyncClient) -> None:
    created = await create(
        client, description="before", temperature=1.0, max_tokens=100, metadata={"a": 1}
    )
    updated = data(await client.put(f"{URL}{created['id']}", json={"description": "after"}))
    assert updated["description"] == "after"
    unchanged = {k: v for k, v in created.items() if k not in ("description", "updated_at")}
    assert {k: updated[k] for k in unchanged} == unchanged
    assert updated["updated_at"] >= created["updated_at"]

    cleared = data(
        await client.put(
            f"{URL}{created['id']}",
            json={"temperature": None, "max_tokens": None, "metadata": {}, "name": "renamed"},
        )
    )
    assert (cleared["temperature"], cleared["max_tokens"], cleared["metadata"]) == (None, None, {})
    assert data(await client.get(f"{URL}{created['id']}"))["name"] == "renamed"

    body = error(await client.put(f"{URL}{created['id']}", json={"name": None, "model": None}), 422)
    assert sorted(e["loc"][1] for e in body["data"]) == ["model", "name"]
    assert "cannot be null" in body["msg"]


async def test_delete_then_404_naming_the_id(client: httpx.AsyncClient) -> None:
    created = await create(client)
    deleted = await client.delete(f"{URL}{created['id']}")
    assert deleted.status_code == 200 and deleted.json() == {
        "code": 0,
        "msg": "success",
        "data": None,
    }
    for method in ("GET", "PUT", "DELETE"):
        kwargs = {"json": {"description": "x"}} if method == "PUT" else {}
        body = error(await client.request(method, f"{URL}{created['id']}", **kwargs), 404)
        assert body["msg"] == f"agent {created['id']} does not exist"
    for unknown in (0, -3, 2**31, 10**30):
        body = error(await client.get(f"{URL}{unknown}"), 404)
        assert str(unknown) in body["msg"]
    body = error(await client.get(f"{URL}abc"), 422)
    assert body["data"][0]["loc"] == ["path", "agent_id"]


async def test_duplicate_names_conflict(client: httpx.AsyncClient) -> None:
    first = await create(client, name="writer")
    second = await create(client, name="editor")
    body = error(await client.post(URL, json={"name": "writer"}), 409)
    assert "'writer' already exists" in body["msg"]
    # Same on every database: MySQL compares names without regard to case.
    error(await client.post(URL, json={"name": "WRITER"}), 409)
    body = error(await client.put(f"{URL}{second['id']}", json={"name": "writer"}), 409)
    assert "'writer' already exists" in body["msg"]
    # Renaming to its own name, or changing only the case, is fine.
    data(await client.put(f"{URL}{first['id']}", json={"name": "writer"}))
    assert data(await client.put(f"{URL}{first['id']}", json={"name": "Writer"}))["name"] == (
        "Writer"
    )
    assert data(await client.get(URL))["total"] == 2


async def test_body_validation(client: httpx.AsyncClient) -> None:
    body = error(await client.post(URL, json={"name": "x", "colour": "red"}), 422)
    assert body["data"] == [
        {
            "loc": ["body", "colour"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]
    body = error(await client.post(URL, json={"description": "no name"}), 422)
    assert body["data"] == [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]
    assert body["msg"] == "invalid name: Field required"

    body = error(
        await client.post(
            URL, json={"name": 5, "max_tokens": "many", "metadata": [1], "provider": "acme"}
        ),
        422,
    )
    assert all(set(e) == {"loc", "msg", "type"} for e in body["data"])
    assert {tuple(e["loc"]) for e in body["data"]} == {
        ("body", "name"),
        ("body", "max_tokens"),
        ("body", "metadata"),
        ("body", "provider"),
    }
    assert "(and 3 more problems)" in body["msg"]

    for bad in (
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "x", "max_iterations": 0},
        {"name": "x", "max_iterations": 101},
        {"name": "x", "max_tokens": 0},
        {"name": "x", "base_url": "ftp://models.example"},
        {"name": "x", "base_url": "http://"},
        {"name": "x", "base_url": "localhost:8000"},
    ):
        error(await client.post(URL, json=bad), 422)
    body = error(
        await client.put(f"{URL}{(await create(client))['id']}", json={"unknown": True}), 422
    )
    assert body["data"][0]["type"] == "extra_forbidden"
    assert data(await client.get(URL))["total"] == 1


async def test_temperature_range(client: httpx.AsyncClient) -> None:
    for bad in (-0.1, 2.01, "hot"):
        body = error(await client.post(URL, json={"name": "t", "temperature": bad}), 422)
        assert body["data"][0]["loc"] == ["body", "temperature"]
    assert (await create(client, name="cold", temperature=0))["temperature"] == 0
    hot = await create(client, name="hot", temperature=2)
    assert hot["temperature"] == 2
    error(await client.put(f"{URL}{hot['id']}", json={"temperature": 3}), 422)
    assert data(await client.get(f"{URL}{hot['id']}"))["temperature"] == 2


async def test_api_key_is_write_only(
    client: httpx.AsyncClient, db: AsyncEngine, settings: Settings
) -> None:
    async def stored_key(agent_id: int) -> str | None:
        async with db.connect() as conn:
            return await conn.scalar(select(Agent.api_key_encrypted).where(Agent.id == agent_id))

    created = await create(client, api_key="sk-first-key-000")
    url = f"{URL}{created['id']}"
    ciphertext = await stored_key(created["id"])
    assert ciphertext is not None and "sk-first-key-000" not in ciphertext
    assert decrypt(ciphertext, settings.secret_key) == "sk-first-key-000"

    kept = data(await client.put(url, json={"description": "no key sent"}))
    assert kept["api_key_set"] is True and "api_key" not in kept
    assert await stored_key(created["id"]) == ciphertext

    replaced = data(await client.put(url, json={"api_key": "sk-second-key-111"}))
    assert replaced["api_key_set"] is True
    assert decrypt(await stored_key(created["id"]) or "", settings.secret_key) == (
        "sk-second-key-111"
    )

    cleared = data(await client.put(url, json={"api_key": None}))
    assert cleared["api_key_set"] is False
    assert await stored_key(created["id"]) is None
    assert data(await client.get(url))["api_key_set"] is False

    dump = await dump_database(db)
    assert "sk-first-key-000" not in dump and "sk-second-key-111" not in dump


async def test_tool_ids(client: httpx.AsyncClient) -> None:
    search = await make_tool(client, "search")
    fetch = await make_tool(client, "fetch")
    agent = await create(client, tool_ids=[fetch, search])
    assert agent["tool_ids"] == [fetch, search]
    url = f"{URL}{agent['id']}"
    # Order is kept: it is the order the model is shown the tools.
    assert data(await client.put(url, json={"tool_ids": [search, fetch]}))["tool_ids"] == [
        search,
        fetch,
    ]
    assert data(await client.get(url))["tool_ids"] == [search, fetch]
    assert data(await client.put(url, json={"description": "x"}))["tool_ids"] == [search, fetch]

    body = error(await client.post(URL, json={"name": "b", "tool_ids": [search, 4242]}), 422)
    assert body["data"] == [
        {"loc": ["body", "tool_ids", 1], "msg": "tool 4242 does not exist", "type": "unknown_tool"}
    ]
    assert "tool 4242 does not exist" in body["msg"]
    body = error(await client.put(url, json={"tool_ids": [4242]}), 422)
    assert data(await client.get(url))["tool_ids"] == [search, fetch]

    body = error(await client.post(URL, json={"name": "c", "tool_ids": [search, search]}), 422)
    assert body["data"][0]["loc"] == ["body", "tool_ids"]
    assert "same tool twice" in body["msg"]
    error(await client.put(url, json={"tool_ids": [fetch, fetch]}), 422)
    error(await client.post(URL, json={"name": "d", "tool_ids": [2**40]}), 422)

    assert data(await client.put(url, json={"tool_ids": []}))["tool_ids"] == []
    assert data(await client.get(URL))["total"] == 1


async def test_json_that_cannot_be_stored_is_refused(client: httpx.AsyncClient) -> None:
    raw = b'{"name": "nan", "metadata": {"score": NaN, "list": [Infinity]}}'
    body = error(
        await client.post(URL, content=raw, headers={"content-type": "application/json"}), 422
    )
    assert [e["loc"] for e in body["data"]] == [
        ["body", "metadata", "score"],
        ["body", "metadata", "list", 0],
    ]
    assert "NaN and Infinity" in body["msg"]

    deepest: Any = "leaf"
    for _ in range(30):  # body + metadata + 30 levels = 32: the most MariaDB stores
        deepest = [deepest]
    ok = await create(client, name="deep", metadata={"x": deepest})
    assert data(await client.get(f"{URL}{ok['id']}"))["metadata"] == {"x": deepest}
    body = error(await client.post(URL, json={"name": "deeper", "metadata": {"x": [deepest]}}), 422)
    assert body["data"][0]["type"] == "json_depth"
    assert data(await client.get(URL))["total"] == 1


async def test_long_system_prompt(clean_db: str, tmp_path: Path) -> None:
    # MySQL TEXT holds 65535 bytes: longer prompts are refused on every database, not 500.
    settings = make_settings(clean_db, tmp_path, max_request_bytes=400_000)
    async with app_client(settings) as client:
        fits = "é" * 32_767 + "a"  # 65535 bytes of UTF-8
        created = await create(client, system_prompt=fits)
        assert data(await client.get(f"{URL}{created['id']}"))["system_prompt"] == fits
        body = error(
            await client.post(URL, json={"name": "long", "system_prompt": fits + "a"}), 422
        )
        assert body["data"][0]["loc"] == ["body", "system_prompt"]
        assert "65535 bytes" in body["msg"]
        error(await client.put(f"{URL}{created['id']}", json={"system_prompt": "€" * 30_000}), 422)
