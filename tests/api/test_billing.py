"""Billing over the real app and database: usage rows go in through infra.ledger (as the
activities write them), reports come out of the API with exact money strings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from activities.nodes import NodeActivities
from infra import ledger
from infra.db import session_factory
from infra.dbtypes import utcnow
from infra.models import DEFAULT_WORKSPACE_ID, Budget, UsageRecord
from infra.pricing import Pricing, PricingError
from tests.support.graphs import chain
from tests.support.responses import data, error
from tests.support.settings import app_client, make_settings

URL = "/api/v1/Billing"
WS = DEFAULT_WORKSPACE_ID
T0 = datetime(2025, 3, 10, tzinfo=UTC)  # a Monday, 00:00 UTC
RANGE = {"start": "2025-03-10T00:00:00Z", "end": "2025-03-11T00:00:00Z"}

# Prices of the test models (USD per million tokens), as a pricing file would give them.
PRICES = {
    "replace_defaults": True,
    "models": {
        "acme-large*": {"input": "2.50", "output": "10.00", "cached_input": "1.25"},
        "acme-small": {"input": "0.15", "output": "0.60"},
    },
}


@pytest.fixture
def pricing(tmp_path: Path) -> Pricing:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return Pricing.load(path)


@pytest.fixture
async def sessions(db: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(db)


class Ledger:
    """Writes usage the way the activities do."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], pricing: Pricing) -> None:
        self.sessions = sessions
        self.pricing = pricing
        self.count = 0

    async def llm(
        self,
        at: datetime,
        *,
        model: str = "acme-large",
        prompt: int = 0,
        completion: int = 0,
        cached: int = 0,
        agent_id: int | None = 1,
        workflow_id: int = 1,
        execution_id: int = 1,
        node_id: str = "write",
        key: str | None = None,
    ) -> UsageRecord | None:
        self.count += 1
        async with self.sessions() as session:
            row = await ledger.record_llm_call(
                session,
                key=key or ledger.usage_key(execution_id, node_id, 1, self.count),
                workspace_id=WS,
                execution_id=execution_id,
                workflow_id=workflow_id,
                agent_id=agent_id,
                node_id=node_id,
                provider="openai",
                model=model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=cached,
                pricing=self.pricing,
                at=at,
            )
            await session.commit()
            return row

    async def tool(
        self,
        at: datetime,
        *,
        agent_id: int | None = None,
        workflow_id: int = 1,
        execution_id: int = 1,
        ok: bool = True,
    ) -> None:
        self.count += 1
        async with self.sessions() as session:
            await ledger.record_tool_call(
                session,
                key=ledger.usage_key(execution_id, "lookup", 1, self.count, kind="tool"),
                workspace_id=WS,
                execution_id=execution_id,
                workflow_id=workflow_id,
                agent_id=agent_id,
                node_id="lookup",
                tool_name="search",
                ok=ok,
                latency_ms=20.0,
                at=at,
            )
            await session.commit()


@pytest.fixture
def usage(sessions: async_sessionmaker[AsyncSession], pricing: Pricing) -> Ledger:
    return Ledger(sessions, pricing)


async def make_agent(client: httpx.AsyncClient, name: str) -> int:
    return int(data(await client.post("/api/v1/Agent/", json={"name": name}), 201)["id"])


async def seed(client: httpx.AsyncClient, usage: Ledger) -> tuple[int, int]:
    """Two agents, two workflows, three executions, on 2025-03-10 (UTC).

    researcher (workflow 1): 10:15 acme-large 1000 prompt (400 cached) + 200 completion
        = (600 * 2.50 + 400 * 1.25 + 200 * 10) / 1e6 = 0.004000
      11:45 acme-large 2000 + 500 = (5000 + 5000) / 1e6 = 0.010000
    writer (workflow 2): 10:30 acme-small 3 + 7 = (0.45 + 4.2) / 1e6 = 0.00000465
      13:05 acme-small 1_000_000 + 10_000 = 0.15 + 0.006 = 0.156000
    tool calls: 10:20 (researcher, workflow 1), 13:10 (no agent, workflow 2)
    """
    researcher = await make_agent(client, "researcher")
    writer = await make_agent(client, "writer")
    at = T0.replace
    await usage.llm(
        at(hour=10, minute=15),
        prompt=1000,
        completion=200,
        cached=400,
        agent_id=researcher,
        workflow_id=1,
        execution_id=1,
    )
    await usage.llm(
        at(hour=11, minute=45),
        prompt=2000,
        completion=500,
        agent_id=researcher,
        workflow_id=1,
        execution_id=2,
    )
    await usage.llm(
        at(hour=10, minute=30),
        model="acme-small",
        prompt=3,
        completion=7,
        agent_id=writer,
        workflow_id=2,
        execution_id=3,
    )
    await usage.llm(
        at(hour=13, minute=5),
        model="acme-small",
        prompt=1_000_000,
        completion=10_000,
        agent_id=writer,
        workflow_id=2,
        execution_id=3,
    )
    await usage.tool(at(hour=10, minute=20), agent_id=researcher, workflow_id=1, execution_id=1)
    await usage.tool(at(hour=13, minute=10), workflow_id=2, execution_id=3)
    return researcher, writer


# -- reports ---------------------------------------------------------------------------------


async def test_every_report_has_the_exact_tokens_and_cost(
    client: httpx.AsyncClient, usage: Ledger
) -> None:
    researcher, writer = await seed(client, usage)

    totals = data(await client.get(f"{URL}/usage", params=RANGE))
    assert totals == {
        "start": "2025-03-10T00:00:00+00:00",
        "end": "2025-03-11T00:00:00+00:00",
        "prompt_tokens": 1_003_003,
        "completion_tokens": 10_707,
        "total_tokens": 1_013_710,
        # 0.004 + 0.010 + 0.00000465 + 0.156 = 0.17000465
        "cost_usd": "0.170005",
        "llm_calls": 4,
        "tool_calls": 2,
        "executions": 3,
        "unpriced_calls": 0,
    }

    breakdown = data(await client.get(f"{URL}/agent-breakdown", params=RANGE))
    assert breakdown["items"] == [
        {
            "agent_id": writer,
            "agent_name": "writer",
            "prompt_tokens": 1_000_003,
            "completion_tokens": 10_007,
            "total_tokens": 1_010_010,
            "cost_usd": "0.156005",
            "llm_calls": 2,
            "tool_calls": 0,
            "unpriced": False,
            "unpriced_models": [],
        },
        {
            "agent_id": researcher,
            "agent_name": "researcher",
            "prompt_tokens": 3000,
            "completion_tokens": 700,
            "total_tokens": 3700,
            "cost_usd": "0.014000",
            "llm_calls": 2,
            "tool_calls": 1,
            "unpriced": False,
            "unpriced_models": [],
        },
    ]

    hours = data(await client.get(f"{URL}/usage/history", params={**RANGE, "granularity": "hour"}))
    assert hours["granularity"] == "hour" and len(hours["items"]) == 24
    busy = {b["bucket_start"]: b for b in hours["items"] if b["llm_calls"] or b["tool_calls"]}
    assert busy == {
        "2025-03-10T10:00:00+00:00": {
            "bucket_start": "2025-03-10T10:00:00+00:00",
            "prompt_tokens": 1003,
            "completion_tokens": 207,
            "total_tokens": 1210,
            "cost_usd": "0.004005",
            "llm_calls": 2,
            "tool_calls": 1,
        },
        "2025-03-10T11:00:00+00:00": {
            "bucket_start": "2025-03-10T11:00:00+00:00",
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "total_tokens": 2500,
            "cost_usd": "0.010000",
            "llm_calls": 1,
            "tool_calls": 0,
        },
        "2025-03-10T13:00:00+00:00": {
            "bucket_start": "2025-03-10T13:00:00+00:00",
            "prompt_tokens": 1_000_000,
            "completion_tokens": 10_000,
            "total_tokens": 1_010_000,
            "cost_usd": "0.156000",
            "llm_calls": 1,
            "tool_calls": 1,
        },
    }

    days = data(
        await client.get(
            f"{URL}/usage/history",
            params={"start": "2025-03-09", "end": "2025-03-12", "granularity": "day"},
        )
    )
    assert [(b["bucket_start"], b["cost_usd"], b["llm_calls"]) for b in days["items"]] == [
        ("2025-03-09T00:00:00+00:00", "0.000000", 0),
        ("2025-03-10T00:00:00+00:00", "0.170005", 4),
        ("2025-03-11T00:00:00+00:00", "0.000000", 0),
    ]


async def test_recording_a_call_twice_counts_it_once(
    client: httpx.AsyncClient, usage: Ledger, db: AsyncEngine
) -> None:
    key = ledger.usage_key(1, "write", 1, 0)
    at = T0.replace(hour=9)
    assert await usage.llm(at, prompt=1000, completion=100, key=key) is not None
    assert await usage.llm(at, prompt=1000, completion=100, key=key) is None
    # The same call's next attempt really called the model: counted.
    assert (
        await usage.llm(at, prompt=1000, completion=100, key=ledger.usage_key(1, "write", 2, 0))
        is not None
    )
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(UsageRecord)) == 2
    totals = data(await client.get(f"{URL}/usage", params=RANGE))
    # 2 * (1000 * 2.50 + 100 * 10) / 1e6
    assert (totals["llm_calls"], totals["prompt_tokens"], totals["cost_usd"]) == (
        2,
        2000,
        "0.007000",
    )


async def test_history_fills_empty_buckets_across_the_range(
    client: httpx.AsyncClient, usage: Ledger
) -> None:
    await usage.llm(T0.replace(hour=2, minute=59, second=59), prompt=400_000)  # 1.000000
    await usage.llm(T0.replace(day=12, hour=23, minute=59), prompt=4)  # 0.000010
    # A range that starts and ends mid-hour: the first bucket is the hour it starts in,
    # and holds only what is inside the range.
    hours = data(
        await client.get(
            f"{URL}/usage/history",
            params={
                "start": "2025-03-10T00:30:00Z",
                "end": "2025-03-10T04:30:00Z",
                "granularity": "hour",
            },
        )
    )["items"]
    assert [(b["bucket_start"], b["cost_usd"]) for b in hours] == [
        ("2025-03-10T00:00:00+00:00", "0.000000"),
        ("2025-03-10T01:00:00+00:00", "0.000000"),
        ("2025-03-10T02:00:00+00:00", "1.000000"),
        ("2025-03-10T03:00:00+00:00", "0.000000"),
        ("2025-03-10T04:00:00+00:00", "0.000000"),
    ]
    assert all(
        set(b)
        == {
            "bucket_start",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_usd",
            "llm_calls",
            "tool_calls",
        }
        for b in hours
    )
    days = data(
        await client.get(
            f"{URL}/usage/history",
            params={"start": "2025-03-01", "end": "2025-04-01", "granularity": "day"},
        )
    )["items"]
    assert len(days) == 31
    assert days[0]["bucket_start"] == "2025-03-01T00:00:00+00:00"
    assert days[-1]["bucket_start"] == "2025-03-31T00:00:00+00:00"
    assert {b["bucket_start"][:10]: b["cost_usd"] for b in days if b["cost_usd"] != "0.000000"} == {
        "2025-03-10": "1.000000",
        "2025-03-12": "0.000010",
    }
    # A bucket's end is exclusive: 23:59:59.999999 is the day before.
    edge = data(
        await client.get(
            f"{URL}/usage/history",
            params={
                "start": "2025-03-10T02:59:59Z",
                "end": "2025-03-10T03:00:00Z",
                "granularity": "hour",
            },
        )
    )["items"]
    assert [(b["bucket_start"], b["llm_calls"]) for b in edge] == [("2025-03-10T02:00:00+00:00", 1)]


async def test_filters_by_agent_and_by_workflow(client: httpx.AsyncClient, usage: Ledger) -> None:
    researcher, writer = await seed(client, usage)

    mine = data(await client.get(f"{URL}/usage", params={**RANGE, "agent_id": researcher}))
    assert (mine["cost_usd"], mine["llm_calls"], mine["tool_calls"], mine["executions"]) == (
        "0.014000",
        2,
        1,
        2,
    )
    second = data(await client.get(f"{URL}/usage", params={**RANGE, "workflow_id": 2}))
    assert (
        second["cost_usd"],
        second["llm_calls"],
        second["tool_calls"],
        second["executions"],
    ) == ("0.156005", 2, 1, 1)
    both = data(
        await client.get(f"{URL}/usage", params={**RANGE, "workflow_id": 2, "agent_id": researcher})
    )
    assert (both["cost_usd"], both["llm_calls"]) == ("0.000000", 0)

    only = data(await client.get(f"{URL}/agent-breakdown", params={**RANGE, "agent_id": writer}))[
        "items"
    ]
    assert [(a["agent_name"], a["cost_usd"]) for a in only] == [("writer", "0.156005")]
    by_flow = data(await client.get(f"{URL}/agent-breakdown", params={**RANGE, "workflow_id": 1}))[
        "items"
    ]
    assert [(a["agent_name"], a["cost_usd"]) for a in by_flow] == [("researcher", "0.014000")]

    hours = data(
        await client.get(
            f"{URL}/usage/history", params={**RANGE, "granularity": "hour", "agent_id": researcher}
        )
    )["items"]
    assert {
        b["bucket_start"][11:13]: b["cost_usd"] for b in hours if b["cost_usd"] != "0.000000"
    } == {"10": "0.004000", "11": "0.010000"}
    days = data(
        await client.get(
            f"{URL}/usage/history", params={**RANGE, "granularity": "day", "workflow_id": 2}
        )
    )["items"]
    assert [(b["cost_usd"], b["llm_calls"], b["tool_calls"]) for b in days] == [("0.156005", 2, 1)]


async def test_ranges_without_data(client: httpx.AsyncClient, usage: Ledger) -> None:
    await seed(client, usage)
    empty = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"}
    assert data(await client.get(f"{URL}/usage", params=empty)) == {
        **{"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"},
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": "0.000000",
        "llm_calls": 0,
        "tool_calls": 0,
        "executions": 0,
        "unpriced_calls": 0,
    }
    assert data(await client.get(f"{URL}/agent-breakdown", params=empty))["items"] == []
    hours = data(await client.get(f"{URL}/usage/history", params={**empty, "granularity": "hour"}))[
        "items"
    ]
    assert len(hours) == 24 and {b["cost_usd"] for b in hours} == {"0.000000"}
    # An id naming no agent or workflow of this workspace (nor its kept usage) is a 404,
    # as another workspace's is (tests/security/test_access_more.py).
    for params in ({"agent_id": 999}, {"workflow_id": 999}):
        assert (await client.get(f"{URL}/usage", params={**RANGE, **params})).status_code == 404
    # The widest range the databases can hold works too.
    wide = data(
        await client.get(
            f"{URL}/usage", params={"start": "0001-01-01T00:00:00", "end": "9999-12-31T23:59:59"}
        )
    )
    assert wide["llm_calls"] == 4 and wide["cost_usd"] == "0.170005"


async def test_the_default_range_is_the_last_30_days(
    client: httpx.AsyncClient, usage: Ledger
) -> None:
    now = utcnow()
    await usage.llm(now - timedelta(days=1), prompt=4)
    await usage.llm(now - timedelta(days=31), prompt=400)
    report = data(await client.get(f"{URL}/usage"))
    assert report["prompt_tokens"] == 4 and report["cost_usd"] == "0.000010"
    start, end = (datetime.fromisoformat(report[k]) for k in ("start", "end"))
    assert end - start == timedelta(days=30) and abs(end - now) < timedelta(minutes=1)
    days = data(await client.get(f"{URL}/usage/history"))
    assert days["granularity"] == "day" and len(days["items"]) in (30, 31)
    # Only start given: up to now; only end given: the 30 days before it.
    since = data(
        await client.get(f"{URL}/usage", params={"start": (now - timedelta(days=40)).isoformat()})
    )
    assert since["prompt_tokens"] == 404
    before = data(
        await client.get(f"{URL}/usage", params={"end": (now - timedelta(days=2)).isoformat()})
    )
    assert before["prompt_tokens"] == 400


async def test_times_without_an_offset_are_utc(client: httpx.AsyncClient, usage: Ledger) -> None:
    await usage.llm(T0.replace(hour=10), prompt=4)
    naive = {"start": "2025-03-10T10:00:00", "end": "2025-03-10T11:00:00"}
    assert data(await client.get(f"{URL}/usage", params=naive))["llm_calls"] == 1
    # 12:00+02:00 is 10:00 UTC; a "+" that was not percent-encoded arrives as a space.
    for start in ("2025-03-10T12:00:00+02:00", "2025-03-10T12:00:00 02:00"):
        report = data(
            await client.get(
                f"{URL}/usage", params={"start": start, "end": "2025-03-10T12:30:00+02:00"}
            )
        )
        assert report["llm_calls"] == 1
        assert report["start"] == "2025-03-10T10:00:00+00:00"
    hours = data(
        await client.get(
            f"{URL}/usage/history",
            params={
                "start": "2025-03-10T12:00:00+02:00",
                "end": "2025-03-10T13:00:00+02:00",
                "granularity": "hour",
            },
        )
    )["items"]
    assert [(b["bucket_start"], b["llm_calls"]) for b in hours] == [
        ("2025-03-10T10:00:00+00:00", 1)
    ]


async def test_bad_parameters_are_422_with_the_reason(client: httpx.AsyncClient) -> None:
    body = error(await client.get(f"{URL}/usage/history", params={"granularity": "week"}), 422)
    assert body["data"][0]["loc"] == ["query", "granularity"]

    body = error(
        await client.get(
            f"{URL}/usage", params={"start": "2025-03-10T00:00:00Z", "end": "2025-03-09T00:00:00Z"}
        ),
        422,
    )
    assert body["msg"] == (
        "invalid end: end (2025-03-09T00:00:00+00:00) must be after "
        "start (2025-03-10T00:00:00+00:00)"
    )
    assert body["data"] == [
        {"loc": ["query", "end"], "msg": body["msg"][len("invalid end: ") :], "type": "range"}
    ]
    same = {"start": "2025-03-10T00:00:00Z", "end": "2025-03-10T00:00:00Z"}
    for path in ("/usage", "/agent-breakdown", "/usage/history"):
        assert "must be after start" in error(await client.get(URL + path, params=same), 422)["msg"]
    future = error(await client.get(f"{URL}/usage", params={"start": "2999-01-01"}), 422)
    assert "(end defaults to now)" in future["msg"]

    body = error(await client.get(f"{URL}/usage", params={"start": "yesterday"}), 422)
    assert body["msg"].startswith("invalid start: 'yesterday' is not an ISO 8601 date")
    assert body["data"][0]["loc"] == ["query", "start"]
    error(await client.get(f"{URL}/usage", params={"end": "2025-13-01"}), 422)
    error(await client.get(f"{URL}/usage", params={"end": "0001-01-02T00:00:00Z"}), 422)
    for params in ({"agent_id": 0}, {"workflow_id": -1}, {"agent_id": "x"}, {"agent_id": 2**31}):
        assert error(await client.get(f"{URL}/agent-breakdown", params=params), 422)["data"]

    too_many = error(
        await client.get(
            f"{URL}/usage/history",
            params={"start": "2020-01-01", "end": "2025-01-01", "granularity": "hour"},
        ),
        422,
    )
    assert "at most 10000 buckets" in too_many["msg"]
    assert "granularity=day" in too_many["msg"]


async def test_unpriced_models_cost_nothing_and_are_flagged(
    client: httpx.AsyncClient, usage: Ledger
) -> None:
    agent = await make_agent(client, "local")
    other = await make_agent(client, "priced")
    for model in ("llama3.1:8b", "llama3.1:8b", "my-finetune"):
        await usage.llm(
            T0.replace(hour=8), model=model, prompt=1000, completion=1000, agent_id=agent
        )
    await usage.llm(T0.replace(hour=8), model="acme-small", prompt=1000, agent_id=other)

    totals = data(await client.get(f"{URL}/usage", params=RANGE))
    assert (totals["llm_calls"], totals["unpriced_calls"], totals["cost_usd"]) == (4, 3, "0.000150")
    items = data(await client.get(f"{URL}/agent-breakdown", params=RANGE))["items"]
    assert [
        (a["agent_name"], a["cost_usd"], a["unpriced"], a["unpriced_models"]) for a in items
    ] == [
        ("priced", "0.000150", False, []),
        ("local", "0.000000", True, ["llama3.1:8b", "my-finetune"]),
    ]


async def test_a_deleted_agent_keeps_its_usage(client: httpx.AsyncClient, usage: Ledger) -> None:
    agent = await make_agent(client, "temp")
    await usage.llm(T0.replace(hour=8), prompt=1000, agent_id=agent)
    data(await client.delete(f"/api/v1/Agent/{agent}"))
    [item] = data(await client.get(f"{URL}/agent-breakdown", params=RANGE))["items"]
    assert (item["agent_id"], item["agent_name"], item["cost_usd"]) == (agent, None, "0.002500")


async def test_a_pricing_file_overrides_the_built_in_prices(
    tmp_path: Path, clean_db: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-4o-mini*"]\ninput = 1\noutput = "2.5"\n')
    settings = make_settings(clean_db, tmp_path, pricing_file=str(path))
    pricing = Pricing.load(settings.pricing_file)
    usage = Ledger(sessions, pricing)
    await usage.llm(T0, model="gpt-4o-mini-2024-07-18", prompt=1000, completion=1000)
    await usage.llm(T0, model="gpt-4o", prompt=1000, completion=1000)  # built-in price
    async with app_client(settings) as client:
        totals = data(await client.get(f"{URL}/usage", params=RANGE))
    # (1000 * 1 + 1000 * 2.5) + (1000 * 2.50 + 1000 * 10.00), per million
    assert totals["cost_usd"] == "0.016000"

    # A bad file stops the worker as it starts (settings only see that it is there).
    path.write_text("[models.x]\ninput = -1\noutput = 0\n")
    with pytest.raises(PricingError, match=r"models\.x\.input must be"):
        NodeActivities(make_settings(clean_db, tmp_path, pricing_file=str(path)), sessions)


# -- budgets ---------------------------------------------------------------------------------


def line(
    monthly: str | None,
    spent: str,
    remaining: str | None,
    exhausted: bool,
    agent_id: int | None = None,
    agent_name: str | None = None,
) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "agent_name": agent_name,
        "monthly_usd": monthly,
        "spent_usd": spent,
        "remaining_usd": remaining,
        "exhausted": exhausted,
    }


def without_times(budget: dict[str, Any]) -> dict[str, Any]:
    def strip(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k != "updated_at"}

    return {"workspace": strip(budget["workspace"]), "agents": [strip(a) for a in budget["agents"]]}


async def test_budgets_are_set_read_and_removed(client: httpx.AsyncClient, usage: Ledger) -> None:
    writer = await make_agent(client, "writer")
    now = utcnow()
    await usage.llm(now, prompt=1_000_000, agent_id=writer)  # 2.50
    await usage.llm(now, prompt=400_000, agent_id=None)  # 1.00
    await usage.llm(ledger.start_of_month() - timedelta(seconds=1), prompt=10**6)  # last month

    budget = data(await client.get(f"{URL}/budget"))
    assert budget["month_start"] == ledger.start_of_month().isoformat()
    assert without_times(budget) == {"workspace": line(None, "3.500000", None, False), "agents": []}

    put = data(await client.put(f"{URL}/budget", json={"monthly_usd": "100.00"}))
    assert put["workspace"]["updated_at"] is not None
    assert without_times(put)["workspace"] == line("100.000000", "3.500000", "96.500000", False)
    # Numbers work too, read as decimals (0.1 stays 0.1), and a second PUT replaces.
    data(await client.put(f"{URL}/budget", json={"monthly_usd": 0.1}))
    put = data(await client.put(f"{URL}/budget", json={"monthly_usd": 2.5, "agent_id": writer}))
    assert without_times(put) == {
        "workspace": line("0.100000", "3.500000", "0.000000", True),
        "agents": [line("2.500000", "2.500000", "0.000000", True, writer, "writer")],
    }
    assert data(await client.get(f"{URL}/budget")) == put

    # null removes a budget (twice is fine).
    for _ in range(2):
        removed = data(await client.put(f"{URL}/budget", json={"monthly_usd": None}))
    assert removed["workspace"]["monthly_usd"] is None and len(removed["agents"]) == 1


async def test_bad_budgets_are_422(client: httpx.AsyncClient) -> None:
    for amount in (
        0,
        "0",
        -5,
        "-0.01",
        "abc",
        "NaN",
        "Infinity",
        True,
        "0.0000001",
        "1000000001",
        [],
        {},
    ):
        body = error(await client.put(f"{URL}/budget", json={"monthly_usd": amount}), 422)
        assert body["data"][0]["loc"][:2] == ["body", "monthly_usd"], (amount, body)
    zero = error(await client.put(f"{URL}/budget", json={"monthly_usd": 0}), 422)
    assert "send null to remove the budget" in zero["msg"]
    error(await client.put(f"{URL}/budget", json={}), 422)
    error(await client.put(f"{URL}/budget", json={"monthly_usd": "5", "extra": 1}), 422)
    unknown = error(
        await client.put(f"{URL}/budget", json={"monthly_usd": "5", "agent_id": 999}), 422
    )
    assert unknown["msg"] == "agent 999 does not exist"
    assert unknown["data"][0]["loc"] == ["body", "agent_id"]
    assert (
        without_times(data(await client.get(f"{URL}/budget")))["workspace"]["monthly_usd"] is None
    )


async def test_concurrent_puts_keep_one_workspace_budget(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    amounts = [f"{n}.00" for n in range(1, 9)]
    responses = await asyncio.gather(
        *[client.put(f"{URL}/budget", json={"monthly_usd": a}) for a in amounts]
    )
    assert [r.status_code for r in responses] == [200] * len(amounts)
    async with db.connect() as conn:
        monthly = (await conn.execute(select(Budget.monthly_usd))).scalars().all()
    assert len(monthly) == 1 and f"{monthly[0]:.2f}" in amounts


async def test_deleting_an_agent_deletes_its_budget(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    agent = await make_agent(client, "short-lived")
    data(await client.put(f"{URL}/budget", json={"monthly_usd": "1", "agent_id": agent}))
    data(await client.delete(f"/api/v1/Agent/{agent}"))
    assert data(await client.get(f"{URL}/budget"))["agents"] == []
    async with db.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Budget)) == 0


async def published_workflow(client: httpx.AsyncClient, agent_id: int, name: str) -> int:
    definition = {
        "nodes": [{"id": "write", "type": "agent", "agent_id": agent_id, "input": "hi"}],
        "edges": chain("write"),
    }
    created = data(
        await client.post("/api/v1/Workflow/", json={"name": name, "definition": definition}), 201
    )
    data(await client.post(f"/api/v1/Workflow/{created['id']}/publish"))
    return int(created["id"])


async def test_an_exhausted_budget_refuses_new_executions_with_402(
    client: httpx.AsyncClient, usage: Ledger
) -> None:
    writer = await make_agent(client, "writer")
    helper = await make_agent(client, "helper")
    flow = await published_workflow(client, writer, "writes")
    other_flow = await published_workflow(client, helper, "helps")

    async def create(workflow_id: int) -> httpx.Response:
        return await client.post("/api/v1/Execution/", json={"workflow_id": workflow_id})

    pending = data(await create(flow), 201)
    data(await client.put(f"{URL}/budget", json={"monthly_usd": "5.00"}))
    await usage.llm(utcnow(), prompt=1_000_000, agent_id=writer)  # 2.50 this month
    data(await create(flow), 201)

    await usage.llm(utcnow(), prompt=1_000_000, agent_id=helper)  # 5.00: used up
    refused = error(await create(flow), 402)
    assert refused["msg"].startswith(
        "new executions are refused: the workspace's monthly budget of $5.00 is exhausted: "
        "$5.00 spent since "
    )
    assert refused["msg"].endswith(
        "raise it with PUT /api/v1/Billing/budget or wait for the next month"
    )
    assert refused["data"] is None
    error(await create(other_flow), 402)
    # A run created before the budget ran out cannot be started after it either.
    refused = error(await client.post(f"/api/v1/Execution/{pending['id']}/start"), 402)
    assert refused["msg"].startswith(f"execution {pending['id']} cannot start: the workspace's")

    # Raising the workspace budget lets runs start; an agent's own budget blocks only
    # the workflows that use that agent.
    data(await client.put(f"{URL}/budget", json={"monthly_usd": "50"}))
    data(await client.put(f"{URL}/budget", json={"monthly_usd": "2.50", "agent_id": writer}))
    refused = error(await create(flow), 402)
    assert f"agent {writer} ('writer') has exhausted its monthly budget of $2.50" in refused["msg"]
    data(await create(other_flow), 201)
    data(await client.put(f"{URL}/budget", json={"monthly_usd": None, "agent_id": writer}))
    data(await create(flow), 201)


async def test_openapi_documents_billing(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/usage", "get"),
        ("/agent-breakdown", "get"),
        ("/usage/history", "get"),
        ("/budget", "get"),
        ("/budget", "put"),
    ):
        operation = spec["paths"][URL + path][method]
        assert operation["tags"] == ["Billing"]
        assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"
        }
    params = {p["name"] for p in spec["paths"][f"{URL}/usage/history"]["get"]["parameters"]}
    assert params == {"start", "end", "agent_id", "workflow_id", "granularity"}
    assert "402" in spec["paths"]["/api/v1/Execution/"]["post"]["responses"]
