from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import DEFAULT_WORKSPACE_ID, Execution, WorkflowVersion
from tests.support.responses import data, error
from workflows.status import ExecutionStatus

URL = "/api/v1/Workflow/"


def chain(*node_ids: str) -> list[dict[str, str]]:
    ids = ["START", *node_ids, "END"]
    return [{"from": a, "to": b} for a, b in itertools.pairwise(ids)]


async def make_agent(client: httpx.AsyncClient, name: str = "writer") -> int:
    return int(data(await client.post("/api/v1/Agent/", json={"name": name}), 201)["id"])


async def make_tool(client: httpx.AsyncClient, name: str = "lookup") -> int:
    body = {"name": name, "type": "http", "config": {"url": "http://127.0.0.1:9/x"}}
    return int(data(await client.post("/api/v1/Tool/", json=body), 201)["id"])


def one_agent(agent_id: int, text: str = "Write about {{ input.topic }}") -> dict[str, Any]:
    return {
        "nodes": [{"id": "write", "type": "agent", "agent_id": agent_id, "input": text}],
        "edges": chain("write"),
    }


async def create(
    client: httpx.AsyncClient,
    definition: dict[str, Any] | None = None,
    name: str = "pipeline",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, **fields}
    if definition is not None:
        body["definition"] = definition
    return data(await client.post(URL, json=body), 201)


async def test_create_draft(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    created = await create(client, one_agent(agent), description="Writes things.")
    assert created["status"] == "draft"
    assert created["version"] == 0
    assert created["has_unpublished_changes"] is True
    assert created["definition"] == one_agent(agent)  # the draft keeps what was written
    assert created["description"] == "Writes things."
    assert created["created_at"].endswith("+00:00")
    assert data(await client.get(f"{URL}{created['id']}")) == created

    empty = await create(client, name="empty")
    assert empty["definition"] == {"nodes": [], "edges": []}
    # A draft may be incomplete or name agents that do not exist yet.
    await create(client, {"nodes": [{"id": "x", "type": "agent", "agent_id": 999}]}, name="wip")
    assert data(await client.get(f"{URL}{empty['id']}/versions"))["total"] == 0


async def test_list_filter_and_paginate(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    for name in ("Daily digest", "weekly_digest", "alerts"):
        await create(client, one_agent(agent), name=name)
    published = data(await client.get(URL, params={"q": "alerts"}))["items"][0]
    data(await client.post(f"{URL}{published['id']}/publish"))

    assert data(await client.get(URL, params={"q": "DIGEST"}))["total"] == 2
    assert data(await client.get(URL, params={"q": "y_d"}))["total"] == 1  # "_" is literal
    assert [
        w["name"] for w in data(await client.get(URL, params={"status": "published"}))["items"]
    ] == ["alerts"]
    assert data(await client.get(URL, params={"status": "draft"}))["total"] == 2
    error(await client.get(URL, params={"status": "archived"}), 422)
    page = data(await client.get(URL, params={"page": 2, "page_size": 2}))
    assert page["total"] == 3 and [w["name"] for w in page["items"]] == ["alerts"]
    assert data(await client.get(URL, params={"page": 3, "page_size": 2}))["items"] == []
    error(await client.get(URL, params={"page_size": 0}), 422)
    error(await client.get(URL, params={"page_size": 101}), 422)


async def test_unknown_ids_and_names(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "424242"),
        ("PUT", "424242"),
        ("DELETE", "424242"),
        ("POST", "424242/publish"),
        ("GET", "424242/versions"),
        ("GET", "424242/versions/1"),
    ):
        kwargs = {"json": {"name": "x"}} if method == "PUT" else {}
        body = error(await client.request(method, f"{URL}{path}", **kwargs), 404)
        assert body["msg"] == "workflow 424242 does not exist"

    first = await create(client, name="nightly")
    second = await create(client, name="hourly")
    body = error(await client.post(URL, json={"name": "nightly"}), 409)
    assert "'nightly' already exists" in body["msg"]
    error(await client.post(URL, json={"name": "NIGHTLY"}), 409)
    body = error(await client.put(f"{URL}{second['id']}", json={"name": "nightly"}), 409)
    assert "'nightly' already exists" in body["msg"]
    assert data(await client.put(f"{URL}{first['id']}", json={"name": "nightly"}))["name"] == (
        "nightly"
    )


async def test_body_validation(client: httpx.AsyncClient) -> None:
    body = error(await client.post(URL, json={"name": "x", "owner": "me"}), 422)
    assert body["data"][0]["loc"] == ["body", "owner"]
    body = error(await client.post(URL, json={"definition": {}}), 422)
    assert body["data"] == [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]
    body = error(await client.post(URL, json={"name": "x", "definition": {"nodes": "many"}}), 422)
    assert body["data"][0]["loc"] == ["body", "definition", "nodes"]
    body = error(
        await client.post(
            URL, json={"name": "x", "definition": {"nodes": [], "edges": [], "layout": {}}}
        ),
        422,
    )
    assert body["data"][0]["loc"] == ["body", "definition", "layout"]
    created = await create(client)
    for nulled in ("name", "description", "definition"):
        body = error(await client.put(f"{URL}{created['id']}", json={nulled: None}), 422)
        # Refused while the body is validated, so worded like every other field error.
        assert body["msg"] == f"invalid {nulled}: cannot be null"
        assert body["data"] == [{"loc": ["body", nulled], "msg": "cannot be null", "type": "null"}]


@pytest.mark.parametrize("node_id", ["Research", "1st", "has-dash", "with space", "x" * 65, ""])
async def test_invalid_node_id_is_refused_at_create(
    client: httpx.AsyncClient, node_id: str
) -> None:
    definition = {"nodes": [{"id": node_id, "type": "agent", "agent_id": 1}]}
    body = error(await client.post(URL, json={"name": "x", "definition": definition}), 422)
    assert body["data"][0]["loc"] == ["body", "definition", "nodes", 0, "agent", "id"]
    created = await create(client)
    error(await client.put(f"{URL}{created['id']}", json={"definition": definition}), 422)
    assert data(await client.get(URL))["total"] == 1


async def test_draft_publish_and_versions(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    v1_definition = one_agent(agent, "First {{ input.topic }}")
    created = await create(client, v1_definition)
    url = f"{URL}{created['id']}"

    published = data(await client.post(f"{url}/publish"))
    assert (published["status"], published["version"], published["has_unpublished_changes"]) == (
        "published",
        1,
        False,
    )
    body = error(await client.post(f"{url}/publish"), 409)
    assert body["msg"] == (
        f"workflow {created['id']} has no changes since version 1; "
        "edit the draft before publishing again"
    )

    # Renaming, or saving the same definition again, is not a change to publish.
    renamed = data(
        await client.put(
            url, json={"name": "renamed", "description": "d", "definition": v1_definition}
        )
    )
    assert renamed["has_unpublished_changes"] is False and renamed["name"] == "renamed"
    error(await client.post(f"{url}/publish"), 409)

    # Editing changes the draft only.
    v2_definition = one_agent(agent, "Second {{ input.topic }}")
    edited = data(await client.put(url, json={"definition": v2_definition}))
    assert (edited["status"], edited["version"], edited["has_unpublished_changes"]) == (
        "published",
        1,
        True,
    )
    assert edited["definition"] == v2_definition
    v1 = data(await client.get(f"{url}/versions/1"))
    assert v1["definition"]["nodes"][0]["input"] == "First {{ input.topic }}"

    second = data(await client.post(f"{url}/publish"))
    assert (second["version"], second["has_unpublished_changes"]) == (2, False)
    data(await client.put(url, json={"definition": one_agent(agent, "Third")}))
    third = data(await client.post(f"{url}/publish"))
    assert third["version"] == 3

    # Published snapshots never change, and keep every default for the run.
    v1_again = data(await client.get(f"{url}/versions/1"))
    assert v1_again == v1
    assert v1["workflow_id"] == created["id"] and v1["version"] == 1
    node = v1["definition"]["nodes"][0]
    assert (node["input"], node["retry"], node["timeout_s"]) == (
        "First {{ input.topic }}",
        None,
        None,
    )
    assert v1["definition"]["edges"] == chain("write")
    assert data(await client.get(f"{url}/versions/2"))["definition"]["nodes"][0]["input"] == (
        "Second {{ input.topic }}"
    )

    versions = data(await client.get(f"{url}/versions"))
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    assert versions["total"] == 3
    page = data(await client.get(f"{url}/versions", params={"page": 2, "page_size": 2}))
    assert [v["version"] for v in page["items"]] == [1] and page["total"] == 3
    error(await client.get(f"{url}/versions", params={"page_size": 101}), 422)

    for missing in (0, 4, 99, 2**40):
        body = error(await client.get(f"{url}/versions/{missing}"), 404)
        assert body["msg"] == f"workflow {created['id']} has no version {missing}"
    error(await client.get(f"{url}/versions/latest"), 422)


async def test_publish_reports_every_problem_at_once(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    tool = await make_tool(client)
    definition = {
        "nodes": [
            {
                "id": "start_here",
                "type": "agent",
                "agent_id": agent,
                "input": "{{ nodes.nope.output }}",
            },  # 0
            {"id": "ghost_agent", "type": "agent", "agent_id": 9999},  # 1
            {"id": "ghost_tool", "type": "tool", "tool_id": 8888},  # 2
            {"id": "start_here", "type": "tool", "tool_id": tool},  # 3
            {"id": "island", "type": "agent", "agent_id": agent},  # 4
            {"id": "stuck", "type": "agent", "agent_id": agent},  # 5
            {"id": "ping", "type": "agent", "agent_id": agent},  # 6
            {"id": "pong", "type": "agent", "agent_id": agent},  # 7
            {
                "id": "check",
                "type": "condition",  # 8
                "routes": [{"when": {"path": "input.x", "op": "exists"}, "to": "nowhere"}],
                "default": "END",
            },
        ],
        "edges": [
            {"from": "START", "to": "start_here"},
            {"from": "start_here", "to": "ghost_agent"},
            {"from": "ghost_agent", "to": "ghost_tool"},
            {"from": "ghost_tool", "to": "END"},
            {"from": "island", "to": "END"},
            {"from": "start_here", "to": "stuck"},
            {"from": "start_here", "to": "ping"},
            {"from": "ping", "to": "pong"},
            {"from": "pong", "to": "ping"},
            {"from": "pong", "to": "check"},
            {"from": "start_here", "to": "missing"},
        ],
    }
    created = await create(client, definition)
    body = error(await client.post(f"{URL}{created['id']}/publish"), 422)
    found = {(p["type"], tuple(p["loc"])) for p in body["data"]}
    assert found == {
        ("duplicate_node", ("definition", "nodes", 3, "id")),
        ("unknown_node", ("definition", "edges", 10, "to")),
        ("unknown_reference", ("definition", "nodes", 0)),
        ("unknown_agent", ("definition", "nodes", 1, "agent_id")),
        ("unknown_tool", ("definition", "nodes", 2, "tool_id")),
        ("unknown_node", ("definition", "nodes", 8, "routes", 0, "to")),
        ("unreachable", ("definition", "nodes", 4)),
        ("dead_end", ("definition", "nodes", 5)),
        ("unbounded_cycle", ("definition", "edges")),
    }
    assert all(set(p) == {"loc", "msg", "type"} for p in body["data"])
    assert body["msg"].startswith(f"workflow {created['id']} cannot be published: ")
    assert body["msg"].endswith(f"(and {len(body['data']) - 1} more problems)")
    messages = " | ".join(p["msg"] for p in body["data"])
    for expected in (
        "agent 9999 does not exist",
        "tool 8888 does not exist",
        "'island' cannot be reached from START",
        "'stuck' never leads to END",
        "cycle ping -> pong -> ping has no bound",
        "reads nodes.nope",
        "'nowhere', which is not a node",
        "'missing', which is not a node",
    ):
        assert expected in messages
    after = data(await client.get(f"{URL}{created['id']}"))
    assert (after["status"], after["version"]) == ("draft", 0)


@pytest.mark.parametrize(
    ("build", "kinds"),
    [
        (lambda agent: {}, ["empty"]),
        (
            lambda agent: {
                "nodes": [{"id": "a", "type": "agent", "agent_id": agent}],
                "edges": [{"from": "a", "to": "END"}],
            },
            ["no_start", "unreachable"],
        ),
        (lambda agent: one_agent(agent, "{{ nodes.nope.output }}"), ["unknown_reference"]),
        (
            lambda agent: {
                "nodes": one_agent(agent)["nodes"],
                "edges": [*chain("write"), {"from": "write", "to": "write"}],
            },
            ["unbounded_cycle"],
        ),
    ],
)
async def test_publish_refuses_single_problems(
    client: httpx.AsyncClient, build: Callable[[int], dict[str, Any]], kinds: list[str]
) -> None:
    created = await create(client, build(await make_agent(client)))
    body = error(await client.post(f"{URL}{created['id']}/publish"), 422)
    assert [p["type"] for p in body["data"]] == kinds


async def test_bounded_loop_publishes(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    definition = {
        "nodes": [
            {"id": "draft", "type": "agent", "agent_id": agent},
            {
                "id": "review",
                "type": "condition",
                "max_visits": 3,
                "routes": [
                    {
                        "when": {"path": "nodes.draft.output", "op": "contains", "value": "TODO"},
                        "to": "draft",
                    }
                ],
                "default": "END",
            },
        ],
        "edges": [{"from": "START", "to": "draft"}, {"from": "draft", "to": "review"}],
    }
    created = await create(client, definition)
    assert data(await client.post(f"{URL}{created['id']}/publish"))["version"] == 1
    unbounded = {
        **definition,
        "nodes": [definition["nodes"][0], {**definition["nodes"][1], "max_visits": None}],
    }
    data(await client.put(f"{URL}{created['id']}", json={"definition": unbounded}))
    body = error(await client.post(f"{URL}{created['id']}/publish"), 422)
    assert [p["type"] for p in body["data"]] == ["unbounded_cycle"]


async def test_delete_agent_used_by_a_published_version(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    created = await create(client, one_agent(agent), name="newsletter")
    # Only published versions hold the agent.
    data(await client.put(f"/api/v1/Agent/{agent}", json={"description": "draft use only"}))
    data(await client.post(f"{URL}{created['id']}/publish"))
    body = error(await client.delete(f"/api/v1/Agent/{agent}"), 409)
    assert body["msg"].startswith(
        f"agent {agent} is used by workflow {created['id']} ('newsletter') version 1"
    )
    assert body["data"] == {"workflow_id": created["id"], "version": 1}
    assert data(await client.get(f"/api/v1/Agent/{agent}"))["id"] == agent

    assert data(await client.delete(f"{URL}{created['id']}")) is None
    error(await client.get(f"{URL}{created['id']}"), 404)
    data(await client.delete(f"/api/v1/Agent/{agent}"))
    error(await client.get(f"/api/v1/Agent/{agent}"), 404)


async def add_execution(db: AsyncEngine, workflow_id: int, status: str) -> int:
    async with db.begin() as conn:
        result = await conn.execute(
            insert(Execution).values(
                workspace_id=DEFAULT_WORKSPACE_ID,
                workflow_id=workflow_id,
                workflow_version=1,
                status=status,
                input={},
                created_at=datetime.now(UTC),
            )
        )
        return int(result.inserted_primary_key[0])


async def count(db: AsyncEngine, model: Any, workflow_id: int) -> int:
    async with db.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count()).select_from(model).where(model.workflow_id == workflow_id)
            )
            or 0
        )


@pytest.mark.parametrize("status", ["running", "pending", "waiting"])
async def test_delete_refused_while_an_execution_is_active(
    client: httpx.AsyncClient, db: AsyncEngine, status: str
) -> None:
    agent = await make_agent(client)
    created = await create(client, one_agent(agent))
    data(await client.post(f"{URL}{created['id']}/publish"))
    execution_id = await add_execution(db, created["id"], status)
    await add_execution(db, created["id"], "completed")

    body = error(await client.delete(f"{URL}{created['id']}"), 409)
    assert body["msg"].startswith(f"workflow {created['id']} has 1 execution(s) pending or running")
    assert body["data"] == {"active_executions": 1}
    assert data(await client.get(f"{URL}{created['id']}"))["version"] == 1

    async with db.begin() as conn:
        await conn.execute(
            Execution.__table__.update()
            .where(Execution.id == execution_id)
            .values(status=ExecutionStatus.CANCELLED)
        )
    data(await client.delete(f"{URL}{created['id']}"))
    # Versions and finished executions go with the workflow.
    assert await count(db, Execution, created["id"]) == 0
    assert await count(db, WorkflowVersion, created["id"]) == 0
    error(await client.get(f"{URL}{created['id']}/versions/1"), 404)
