from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import Tool
from infra.secrets import decrypt
from infra.settings import Settings
from tests.support.database import dump_database
from tests.support.logs import remove_stderr_handlers
from tests.support.responses import data, error
from tests.support.settings import app_client

URL = "/api/v1/Tool/"
MASKED = {"value": "***", "secret": True}
TOKEN = "Bearer tok-9f8e7d6c5b4a-very-secret"
ENV_SECRET = "mcp-env-secret-5544"


def http_tool(name: str = "search", **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "http",
        "description": "Searches.",
        "input_schema": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
        "config": {"url": "https://api.example.com/search", **config},
    }


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    return data(await client.post(URL, json={**http_tool(), **body}), 201)


async def stored_config(db: AsyncEngine, tool_id: int) -> dict[str, Any]:
    async with db.connect() as conn:
        config = await conn.scalar(select(Tool.config).where(Tool.id == tool_id))
    assert isinstance(config, dict)
    return config


async def test_crud(client: httpx.AsyncClient) -> None:
    created = await create(client)
    assert created["name"] == "search" and created["type"] == "http"
    assert created["config"] == {
        "method": "POST",
        "url": "https://api.example.com/search",
        "headers": {},
        "timeout_s": 30.0,
        "delivery": "at_least_once",
    }
    assert created["input_schema"]["required"] == ["q"]
    assert created["created_at"].endswith("+00:00")
    url = f"{URL}{created['id']}"
    assert data(await client.get(url)) == created

    updated = data(await client.put(url, json={"description": "Finds things."}))
    assert updated["description"] == "Finds things."
    assert {k: updated[k] for k in ("name", "type", "config", "input_schema")} == {
        k: created[k] for k in ("name", "type", "config", "input_schema")
    }
    cleared = data(await client.put(url, json={"input_schema": None}))
    assert cleared["input_schema"] is None

    for i in range(4):
        await create(client, name=f"fetch_{i}")
    page = data(await client.get(URL, params={"page": 2, "page_size": 3}))
    assert page["total"] == 5 and [t["name"] for t in page["items"]] == ["fetch_2", "fetch_3"]
    assert data(await client.get(URL, params={"q": "FETCH"}))["total"] == 4
    assert data(await client.get(URL, params={"q": "_3"}))["total"] == 1
    assert data(await client.get(URL, params={"page": 9}))["items"] == []
    error(await client.get(URL, params={"page_size": 101}), 422)
    error(await client.get(URL, params={"page_size": 0}), 422)

    assert data(await client.delete(url)) is None
    body = error(await client.get(url), 404)
    assert body["msg"] == f"tool {created['id']} does not exist"
    error(await client.delete(url), 404)
    error(await client.put(url, json={"description": "x"}), 404)
    assert data(await client.get(URL))["total"] == 4


async def test_duplicate_names_conflict(client: httpx.AsyncClient) -> None:
    await create(client, name="search")
    other = await create(client, name="fetch")
    body = error(await client.post(URL, json=http_tool("search")), 409)
    assert "'search' already exists" in body["msg"]
    error(await client.post(URL, json=http_tool("Search")), 409)
    body = error(await client.put(f"{URL}{other['id']}", json={"name": "search"}), 409)
    assert "'search' already exists" in body["msg"]
    assert data(await client.get(f"{URL}{other['id']}"))["name"] == "fetch"


async def test_name_pattern(client: httpx.AsyncClient) -> None:
    for bad in ("bad name!", "", "x" * 65, "naïve", "semi;colon"):
        body = error(await client.post(URL, json=http_tool(bad)), 422)
        assert body["data"][0]["loc"] == ["body", "name"]
    for good in ("a", "get-weather_v2", "X" * 64):
        await create(client, name=good)
    tool = await create(client, name="renamed")
    error(await client.put(f"{URL}{tool['id']}", json={"name": "bad name!"}), 422)


async def test_body_validation(client: httpx.AsyncClient) -> None:
    body = error(await client.post(URL, json={**http_tool(), "colour": 1}), 422)
    assert body["data"][0] == {
        "loc": ["body", "colour"],
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }
    body = error(await client.post(URL, json={"name": "t", "config": {"url": "http://x"}}), 422)
    assert ["body", "type"] in [e["loc"] for e in body["data"]]
    error(await client.post(URL, json={**http_tool(), "type": "grpc"}), 422)
    body = error(await client.post(URL, json={"name": "t", "type": "http"}), 422)
    assert body["data"] == [{"loc": ["body", "config"], "msg": "Field required", "type": "missing"}]
    body = error(await client.post(URL, json={**http_tool(), "description": 7}), 422)
    assert body["data"][0]["loc"] == ["body", "description"]


@pytest.mark.parametrize(
    ("config", "loc", "hint"),
    [
        ({"url": "ftp://example.com/x"}, ["body", "config", "url"], "http:// or https://"),
        ({"url": "http://"}, ["body", "config", "url"], "with a host"),
        ({"url": "example.com/search"}, ["body", "config", "url"], "http:// or https://"),
        ({}, ["body", "config", "url"], "Field required"),
        ({"url": "http://x", "method": "TRACE"}, ["body", "config", "method"], "GET"),
        ({"url": "http://x", "timeout_s": 0}, ["body", "config", "timeout_s"], "greater than 0"),
        ({"url": "http://x", "delivery": "exactly_once"}, ["body", "config", "delivery"], "once"),
        ({"url": "http://x", "headers": {"A": 5}}, ["body", "config", "headers", "A", "str"], ""),
        ({"url": "http://x", "transport": "stdio"}, ["body", "config", "transport"], "Extra"),
    ],
)
async def test_http_config_validation(
    client: httpx.AsyncClient, config: dict[str, Any], loc: list[str], hint: str
) -> None:
    body = error(await client.post(URL, json={"name": "t", "type": "http", "config": config}), 422)
    assert body["data"][0]["loc"] == loc, body
    assert hint in body["data"][0]["msg"]
    assert data(await client.get(URL))["total"] == 0


@pytest.mark.parametrize(
    ("config", "loc", "hint"),
    [
        ({"transport": "stdio"}, ["body", "config"], "stdio transport needs a command"),
        (
            {"transport": "streamable_http"},
            ["body", "config"],
            "streamable_http transport needs a url",
        ),
        ({"transport": "sse", "command": "x"}, ["body", "config"], "sse transport needs a url"),
        ({"command": "mcp-server"}, ["body", "config", "transport"], "Field required"),
        ({"transport": "websocket", "url": "http://x"}, ["body", "config", "transport"], "stdio"),
        (
            {"transport": "streamable_http", "url": "file:///tmp/x"},
            ["body", "config", "url"],
            "http",
        ),
    ],
)
async def test_mcp_config_validation(
    client: httpx.AsyncClient, config: dict[str, Any], loc: list[str], hint: str
) -> None:
    body = error(await client.post(URL, json={"name": "m", "type": "mcp", "config": config}), 422)
    assert body["data"][0]["loc"] == loc, body
    assert hint in body["data"][0]["msg"]


async def test_mcp_tools(client: httpx.AsyncClient) -> None:
    stdio = data(
        await client.post(
            URL,
            json={
                "name": "files",
                "type": "mcp",
                "config": {
                    "transport": "stdio",
                    "command": "mcp-files",
                    "args": ["--root", "/srv"],
                    "env": {"FILES_TOKEN": ENV_SECRET},
                    "tool_name": "read_file",
                },
            },
        ),
        201,
    )
    assert stdio["config"]["env"] == {"FILES_TOKEN": MASKED}
    assert stdio["config"]["args"] == ["--root", "/srv"]
    assert stdio["input_schema"] is None
    # With its schema given, saving it looks nothing up (tests talk to loopback only).
    remote = data(
        await client.post(
            URL,
            json={
                "name": "remote",
                "type": "mcp",
                "input_schema": {"type": "object"},
                "config": {
                    "transport": "streamable_http",
                    "url": "https://mcp.example.com/mcp",
                    "headers": {"Authorization": {"value": TOKEN, "secret": True}},
                },
            },
        ),
        201,
    )
    assert remote["config"]["headers"] == {"Authorization": MASKED}
    assert ENV_SECRET not in json.dumps(stdio) and TOKEN not in json.dumps(remote)


async def test_secret_headers_are_masked_and_plain_ones_shown(client: httpx.AsyncClient) -> None:
    created = await create(
        client,
        config={
            "url": "https://api.example.com/search",
            "headers": {
                "Authorization": {"value": TOKEN, "secret": True},
                "X-Team": "research",
                "X-Plain": {"value": "visible", "secret": False},
            },
        },
    )
    assert created["config"]["headers"] == {
        "Authorization": MASKED,
        "X-Team": "research",
        "X-Plain": "visible",
    }
    for response in (await client.get(f"{URL}{created['id']}"), await client.get(URL)):
        assert TOKEN not in response.text and "tok-9f8e7d6c5b4a" not in response.text
    assert data(await client.get(f"{URL}{created['id']}"))["config"] == created["config"]


async def test_masked_secret_sent_back_is_kept(
    client: httpx.AsyncClient, db: AsyncEngine, settings: Settings
) -> None:
    created = await create(
        client,
        config={
            "url": "https://api.example.com/search",
            "headers": {"Authorization": {"value": TOKEN, "secret": True}, "X-Team": "a"},
        },
    )
    url = f"{URL}{created['id']}"
    before = (await stored_config(db, created["id"]))["headers"]["Authorization"]
    assert before["secret"] is True and TOKEN not in before["value"]
    assert decrypt(before["value"], settings.secret_key) == TOKEN

    # The config exactly as GET shows it, with one plain header changed.
    shown = data(await client.get(url))["config"]
    edited = {**shown, "timeout_s": 5, "headers": {**shown["headers"], "X-Team": "b"}}
    updated = data(await client.put(url, json={"config": edited}))
    assert updated["config"]["headers"] == {"Authorization": MASKED, "X-Team": "b"}
    assert updated["config"]["timeout_s"] == 5
    after = (await stored_config(db, created["id"]))["headers"]["Authorization"]
    assert after == before  # same ciphertext, not re-encrypted "***"

    # A bare "***" also means "keep it".
    bare = {**edited, "headers": {"Authorization": "***", "X-Team": "b"}}
    data(await client.put(url, json={"config": bare}))
    assert (await stored_config(db, created["id"]))["headers"]["Authorization"] == before

    # Changing only the type or the name never touches the secret either.
    data(await client.put(url, json={"name": "search2", "type": "http"}))
    assert (await stored_config(db, created["id"]))["headers"]["Authorization"] == before

    # A new value replaces it.
    rotated = {
        **edited,
        "headers": {"Authorization": {"value": "Bearer new-token-42"}, "X-Team": "b"},
    }
    data(await client.put(url, json={"config": rotated}))
    now = (await stored_config(db, created["id"]))["headers"]["Authorization"]
    assert now["value"] != before["value"]
    assert decrypt(now["value"], settings.secret_key) == "Bearer new-token-42"


async def test_mask_without_a_stored_secret_is_refused(client: httpx.AsyncClient) -> None:
    body = error(await client.post(URL, json=http_tool(headers={"Authorization": MASKED})), 422)
    assert body["data"][0]["loc"] == ["body", "config", "headers", "Authorization"]
    assert "send the real value" in body["msg"]
    created = await create(client)
    body = error(
        await client.put(
            f"{URL}{created['id']}",
            json={"config": {"url": "http://x", "headers": {"X-New": MASKED}}},
        ),
        422,
    )
    assert "X-New" in body["msg"]


async def test_update_config_and_type(client: httpx.AsyncClient) -> None:
    created = await create(client)
    url = f"{URL}{created['id']}"
    body = error(await client.put(url, json={"config": {"url": "gopher://x"}}), 422)
    assert body["data"][0]["loc"] == ["body", "config", "url"]
    assert body["msg"].startswith("invalid config for an http tool")
    # An http config is not an mcp config: changing the type needs a new config.
    body = error(await client.put(url, json={"type": "mcp"}), 422)
    assert ["body", "config", "transport"] in [e["loc"] for e in body["data"]]
    changed = data(
        await client.put(
            url, json={"type": "mcp", "config": {"transport": "stdio", "command": "mcp-search"}}
        )
    )
    assert changed["type"] == "mcp" and changed["config"]["command"] == "mcp-search"
    assert data(await client.get(url))["type"] == "mcp"
    error(await client.put(url, json={"type": None}), 422)
    error(await client.put(url, json={"config": None}), 422)


@pytest.mark.parametrize(
    ("schema", "hint"),
    [
        ({"type": "string"}, "object"),
        ({"type": "array", "items": {"type": "string"}}, "object"),
        ({"type": "object", "properties": {"q": {"type": "text"}}}, "not a valid JSON Schema"),
        ({"type": "object", "required": "q"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": 5}, "not a valid JSON Schema"),
    ],
)
async def test_input_schema_must_be_an_object_schema(
    client: httpx.AsyncClient, schema: dict[str, Any], hint: str
) -> None:
    body = error(await client.post(URL, json={**http_tool(), "input_schema": schema}), 422)
    assert body["data"][0]["loc"] == ["body", "input_schema"]
    assert hint in body["msg"]
    created = await create(client)
    error(await client.put(f"{URL}{created['id']}", json={"input_schema": schema}), 422)
    assert (
        data(await client.get(f"{URL}{created['id']}"))["input_schema"] == (created["input_schema"])
    )


async def test_secrets_are_stored_encrypted_only(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    await create(
        client,
        config={
            "url": "https://x.example",
            "headers": {"Authorization": {"value": TOKEN, "secret": True}},
        },
    )
    data(
        await client.post(
            URL,
            json={
                "name": "mcp",
                "type": "mcp",
                "config": {
                    "transport": "stdio",
                    "command": "srv",
                    "env": {"API_TOKEN": ENV_SECRET},
                },
            },
        ),
        201,
    )
    data(
        await client.post("/api/v1/Agent/", json={"name": "a", "api_key": "sk-agent-key-777"}), 201
    )
    dump = await dump_database(db)
    assert "enc:" in dump  # the rows are there, as ciphertext
    for secret in (TOKEN, "tok-9f8e7d6c5b4a", ENV_SECRET, "sk-agent-key-777"):
        assert secret not in dump


async def test_secrets_never_reach_the_logs(
    settings: Settings, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # The app starts inside the test, so the JSON log handler its lifespan installs
    # writes to the stderr capsys captures.
    try:
        async with app_client(settings) as client:
            await exercise_secrets(client)
    finally:
        remove_stderr_handlers()
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) == 7, output  # the capture really holds this test's request log
    assert all(line["request_id"] for line in requests)
    assert {(line["method"], line["status"]) for line in requests} == {
        ("POST", 201),
        ("PUT", 200),
        ("PUT", 422),
        ("POST", 422),
        ("GET", 200),
    }
    for secret in (TOKEN, "tok-9f8e7d6c5b4a", ENV_SECRET, "sk-agent-key-777"):
        assert secret not in output
        assert secret not in caplog.text


async def exercise_secrets(client: httpx.AsyncClient) -> None:
    headers = {"Authorization": {"value": TOKEN, "secret": True}}
    created = await create(client, config={"url": "https://x.example", "headers": headers})
    url = f"{URL}{created['id']}"
    data(await client.put(url, json={"config": {"url": "https://y.example", "headers": headers}}))
    # Invalid requests that carry the secret too.
    invalid = await client.put(url, json={"config": {"url": "ftp://z", "headers": headers}})
    assert invalid.status_code == 422 and TOKEN not in invalid.text
    too_long = {"Authorization": {"value": TOKEN + "x" * 9000, "secret": True}}
    invalid = await client.post(URL, json=http_tool("other", headers=too_long))
    assert invalid.status_code == 422 and TOKEN not in invalid.text
    data(
        await client.post(
            URL,
            json={
                "name": "m",
                "type": "mcp",
                "config": {"transport": "stdio", "command": "srv", "env": {"TOKEN": ENV_SECRET}},
            },
        ),
        201,
    )
    data(
        await client.post("/api/v1/Agent/", json={"name": "a", "api_key": "sk-agent-key-777"}), 201
    )
    data(await client.get(URL))


async def test_delete_refused_while_an_agent_lists_the_tool(client: httpx.AsyncClient) -> None:
    tool = await create(client)
    agent = data(
        await client.post("/api/v1/Agent/", json={"name": "searcher", "tool_ids": [tool["id"]]}),
        201,
    )
    body = error(await client.delete(f"{URL}{tool['id']}"), 409)
    assert f"agent {agent['id']} ('searcher')" in body["msg"]
    assert "tool_ids" in body["msg"]
    data(await client.put(f"/api/v1/Agent/{agent['id']}", json={"tool_ids": []}))
    data(await client.delete(f"{URL}{tool['id']}"))
    error(await client.get(f"{URL}{tool['id']}"), 404)


async def test_delete_refused_while_a_published_version_uses_the_tool(
    client: httpx.AsyncClient,
) -> None:
    tool = await create(client)
    definition = {
        "nodes": [{"id": "look", "type": "tool", "tool_id": tool["id"]}],
        "edges": [{"from": "START", "to": "look"}, {"from": "look", "to": "END"}],
    }
    workflow = data(
        await client.post(
            "/api/v1/Workflow/", json={"name": "lookup flow", "definition": definition}
        ),
        201,
    )
    # A draft does not hold the tool...
    data(await client.put(f"{URL}{tool['id']}", json={"description": "still here"}))
    data(await client.post(f"/api/v1/Workflow/{workflow['id']}/publish"))
    # ...a published version does, even after the draft stops using it.
    data(await client.put(f"/api/v1/Workflow/{workflow['id']}", json={"definition": {}}))
    body = error(await client.delete(f"{URL}{tool['id']}"), 409)
    assert f"workflow {workflow['id']} ('lookup flow') version 1" in body["msg"]
    assert body["data"] == {"workflow_id": workflow["id"], "version": 1}
    data(await client.delete(f"/api/v1/Workflow/{workflow['id']}"))
    data(await client.delete(f"{URL}{tool['id']}"))
