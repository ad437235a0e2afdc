"""Usage from real runs: exact tokens and cost everywhere, one ledger row per real model
call even across a worker crash, and budgets that stop runs."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from infra.db import create_engine, session_factory
from infra.models import UsageRecord
from tests.support.engine import TEST_PRICES, Platform, crash_worker_during
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain
from tests.support.responses import data, error
from workflows.events import EventType
from workflows.status import ExecutionStatus

# keel-test-model costs 2.50 USD per million prompt tokens and 10.00 per million completion
# tokens: 1,200 prompt tokens cost 0.003000 and 300 completion tokens 0.003000.
pytestmark = pytest.mark.settings(pricing_file=TEST_PRICES)


def priced_turn(content: str = "done") -> Turn:
    return Turn(content=content, prompt_tokens=1200, completion_tokens=300)


async def agent(platform: Platform, llm: FakeOpenAI, name: str) -> int:
    return await platform.agent(
        name,
        provider="openai",
        model="keel-test-model",
        base_url=llm.base_url,
        api_key="sk-test",
        metadata={"stream": False},
    )


async def ledger_rows(platform: Platform, kind: str = "llm") -> list[UsageRecord]:
    engine = create_engine(platform.settings.resolved_database_url)
    try:
        async with session_factory(engine)() as session:
            return list(
                await session.scalars(
                    select(UsageRecord).where(UsageRecord.kind == kind).order_by(UsageRecord.id)
                )
            )
    finally:
        await engine.dispose()


async def test_exact_usage_in_every_report(platform: Platform) -> None:
    async with FakeOpenAI([priced_turn()]) as llm:
        first, second = await agent(platform, llm, "first"), await agent(platform, llm, "second")
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "a", "type": "agent", "agent_id": first},
                    {"id": "b", "type": "agent", "agent_id": second},
                ],
                "edges": chain("a", "b"),
            }
        )
        execution = await platform.run(workflow_id)
        final = await platform.wait_status(execution["id"], "completed")
        events, _ = await platform.watch(execution["id"])

    assert len(llm.requests) == 2
    assert final["usage"] == {
        "prompt_tokens": 2400,
        "completion_tokens": 600,
        "cost_usd": "0.012000",
    }
    recorded = [e["data"] for e in events if e["type"] == EventType.USAGE_RECORDED]
    assert [(r["prompt_tokens"], r["completion_tokens"], r["cost_usd"]) for r in recorded] == [
        (1200, 300, "0.006000"),
        (1200, 300, "0.006000"),
    ]

    usage = data(await platform.http.get("/api/v1/Billing/usage"))
    assert usage["prompt_tokens"] == 2400 and usage["completion_tokens"] == 600
    assert usage["total_tokens"] == 3000 and usage["cost_usd"] == "0.012000"
    assert usage["llm_calls"] == 2 and usage["executions"] == 1

    breakdown = data(await platform.http.get("/api/v1/Billing/agent-breakdown"))["items"]
    assert [(i["agent_name"], i["cost_usd"], i["llm_calls"]) for i in breakdown] == [
        ("first", "0.006000", 1),
        ("second", "0.006000", 1),
    ]
    only_first = data(await platform.http.get("/api/v1/Billing/usage", params={"agent_id": first}))
    assert only_first["cost_usd"] == "0.006000"

    history = data(
        await platform.http.get("/api/v1/Billing/usage/history", params={"granularity": "day"})
    )["items"]
    assert sum(int(b["prompt_tokens"]) for b in history) == 2400
    assert [b["cost_usd"] for b in history if b["cost_usd"] != "0.000000"] == ["0.012000"]


async def test_ledger_has_one_row_per_real_model_call_across_a_crash(
    platform_without_worker: Platform,
) -> None:
    platform = platform_without_worker
    async with FakeOpenAI([priced_turn("planned"), priced_turn("summed up")]) as llm:
        planner, closer = (
            await agent(platform, llm, "planner"),
            await agent(platform, llm, "closer"),
        )
        slow = await platform.agent("slow", metadata={"fake": {"delay_s": 3}})
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "plan", "type": "agent", "agent_id": planner},
                    {"id": "think", "type": "agent", "agent_id": slow},
                    {"id": "close", "type": "agent", "agent_id": closer},
                ],
                "edges": chain("plan", "think", "close"),
            }
        )
        execution = await platform.run(workflow_id)
        _, final = await crash_worker_during(platform, execution["id"], "think")
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    paid = [r for r in await ledger_rows(platform) if r.provider == "openai"]
    assert len(paid) == len(llm.requests) == 2
    assert final["usage"]["cost_usd"] == "0.012000"


async def test_budget_stops_a_run_at_its_next_model_call_and_refuses_new_runs(
    platform: Platform,
) -> None:
    data(await platform.http.put("/api/v1/Billing/budget", json={"monthly_usd": "0.001"}))
    async with FakeOpenAI([priced_turn()]) as llm:
        spender = await agent(platform, llm, "spender")
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "a", "type": "agent", "agent_id": spender},
                    {"id": "b", "type": "agent", "agent_id": spender},
                ],
                "edges": chain("a", "b"),
            }
        )
        execution = await platform.run(workflow_id)
        final = await platform.wait_status(execution["id"], "failed")

    # The first call was within budget and crossed it; the second was never made.
    assert len(llm.requests) == 1
    assert final["error"].startswith("budget_exceeded")
    assert {n["node_id"]: n["status"] for n in final["nodes"]} == {"a": "completed", "b": "failed"}
    body = error(
        await platform.http.post(
            "/api/v1/Execution/", json={"workflow_id": workflow_id, "start": True}
        ),
        402,
    )
    assert "budget" in body["msg"]
    budget = data(await platform.http.get("/api/v1/Billing/budget"))
    assert budget["workspace"]["spent_usd"] == "0.006000"
    assert budget["workspace"]["exhausted"] is True
