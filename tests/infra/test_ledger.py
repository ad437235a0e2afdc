"""The usage ledger on a real database (SQLite, and MariaDB when configured): recording
is idempotent per key, sums are exact to the ledger's 10 decimal places, and budgets
block once exhausted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra import ledger
from infra.db import one_statement_writes, session_factory
from infra.dbtypes import utcnow
from infra.models import DEFAULT_WORKSPACE_ID, Agent, UsageRecord
from infra.pricing import Price, Pricing
from infra.usd import usd_label

WS = DEFAULT_WORKSPACE_ID
# One model at a price that makes every token count show at the 10th decimal place.
PRICING = Pricing(
    {
        "m-tiny": Price(Decimal("0.0001"), Decimal("0.0003")),
        "m-usd": Price(Decimal("1"), Decimal("0")),
    }
)


@pytest.fixture
async def sessions(db: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(db)


def llm(key: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "key": key,
        "workspace_id": WS,
        "execution_id": 1,
        "workflow_id": 1,
        "agent_id": None,
        "node_id": "write",
        "provider": "openai",
        "model": "m-tiny",
        "prompt_tokens": 1,
        "completion_tokens": 0,
        "pricing": PRICING,
    }
    values.update(fields)
    return values


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[UsageRecord]:
    async with sessions() as session:
        return list(await session.scalars(select(UsageRecord).order_by(UsageRecord.id)))


def test_usage_key_names_kind_execution_node_visit_call_and_attempt() -> None:
    assert ledger.usage_key(7, "research", 1, 0) == "llm:7:research:1:0:1"
    assert ledger.usage_key(7, "research", 2, 0) == "llm:7:research:1:0:2"  # a real retry
    assert (
        ledger.usage_key(7, "research", 1, "2.1", kind="tool", visit=3) == "tool:7:research:3:2.1:1"
    )
    # An LLM call and a tool call with the same numbers are different calls.
    assert ledger.usage_key(7, "n", 1, 0) != ledger.usage_key(7, "n", 1, 0, kind="tool")
    with pytest.raises(ValueError, match="count from 1"):
        ledger.usage_key(7, "n", 0, 0)
    with pytest.raises(ValueError, match="longer than 255"):
        ledger.usage_key(7, "n", 1, "x" * 300)


async def test_the_same_key_is_recorded_once_and_a_new_attempt_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = ledger.usage_key(1, "write", 1, 0)
    async with sessions() as session:
        first = await ledger.record_llm_call(session, **llm(key, prompt_tokens=10))
        await session.commit()
    assert first is not None and first.id and first.cost_usd == Decimal("0.000000001")
    async with sessions() as session:  # a replayed recording, even with other numbers
        assert await ledger.record_llm_call(session, **llm(key, prompt_tokens=99)) is None
        await session.commit()
    async with sessions() as session:  # attempt 2 called the model again: it is paid
        retry = await ledger.record_llm_call(
            session, **llm(ledger.usage_key(1, "write", 2, 0), prompt_tokens=10)
        )
        await session.commit()
    assert retry is not None
    stored = await rows(sessions)
    assert [(r.idempotency_key, r.prompt_tokens) for r in stored] == [
        ("llm:1:write:1:0:1", 10),
        ("llm:1:write:1:0:2", 10),
    ]


async def test_a_duplicate_leaves_the_callers_transaction_intact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        assert await ledger.record_llm_call(session, **llm("a")) is not None
        assert await ledger.record_llm_call(session, **llm("a")) is None
        assert (
            await ledger.record_tool_call(
                session,
                key="b",
                workspace_id=WS,
                execution_id=1,
                workflow_id=1,
                agent_id=None,
                node_id="lookup",
                tool_name="search",
                ok=False,
                latency_ms=12.5,
            )
            is not None
        )
        await session.commit()
    stored = await rows(sessions)
    assert [(r.idempotency_key, r.kind) for r in stored] == [("a", "llm"), ("b", "tool")]
    tool = stored[1]
    assert (tool.tool_name, tool.ok, tool.latency_ms, tool.cost_usd, tool.model) == (
        "search",
        False,
        12.5,
        Decimal(0),
        None,
    )


async def test_a_rolled_back_recording_leaves_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await ledger.record_llm_call(session, **llm("gone"))
        await session.rollback()
    assert await rows(sessions) == []


async def test_racing_recordings_of_one_call_leave_one_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def record() -> bool:
        async with sessions() as session:
            row = await ledger.record_llm_call(session, **llm("race"))
            await session.commit()
            return row is not None

    results = await asyncio.gather(*[record() for _ in range(8)])
    assert results.count(True) == 1
    assert len(await rows(sessions)) == 1


async def test_the_workers_one_statement_writes_record_each_call_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The worker writes usage through a plain connection (``one_statement_writes``):
    racing and replayed recordings of one call leave one row there too."""
    writes = one_statement_writes(sessions)

    async def record(key: str) -> bool:
        async with writes() as connection:
            return await ledger.record_llm_call(connection, **llm(key)) is not None

    results = await asyncio.gather(*[record("race") for _ in range(8)])
    assert results.count(True) == 1
    assert await record("race") is False  # replayed later
    assert await record("next") is True
    assert [r.idempotency_key for r in await rows(sessions)] == ["race", "next"]


async def test_the_row_keeps_tokens_prices_and_cost(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    at = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    pricing = Pricing({"gpt-x*": Price(Decimal("2.50"), Decimal("10"), Decimal("1.25"))})
    async with sessions() as session:
        await ledger.record_llm_call(
            session,
            **llm(
                "k",
                model="gpt-x-2025",
                prompt_tokens=1000,
                completion_tokens=300,
                cached_tokens=400,
                reasoning_tokens=100,
                latency_ms=812.5,
                agent_id=None,
                pricing=pricing,
                at=at,
            ),
        )
        await session.commit()
    [row] = await rows(sessions)
    # 600 * 2.50 + 400 * 1.25 + 300 * 10 = 5000 per million tokens
    assert row.cost_usd == Decimal("0.005")
    assert (
        row.prompt_tokens,
        row.completion_tokens,
        row.total_tokens,
        row.cached_tokens,
        row.reasoning_tokens,
    ) == (1000, 300, 1300, 400, 100)
    assert (row.input_usd_per_mtok, row.output_usd_per_mtok) == (Decimal("2.5"), Decimal(10))
    assert row.unpriced is False and row.latency_ms == 812.5 and row.created_at == at


async def test_unknown_models_are_recorded_at_zero_and_flagged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        row = await ledger.record_llm_call(
            session, **llm("u", model="who-knows", prompt_tokens=5000)
        )
        await session.commit()
    assert row is not None and row.unpriced is True and row.cost_usd == 0


async def test_bad_token_counts_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        for field in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            with pytest.raises(ValueError, match=field):
                await ledger.record_llm_call(session, **llm("bad", **{field: -1}))
    assert await rows(sessions) == []


async def test_sums_are_exact_to_ten_decimal_places(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # 0.0000000001 USD per prompt token: float addition of such amounts drifts; the ledger
    # must not. 300 rows of 1..300 tokens: 45150e-10 USD, plus three rows of whole
    # dollars with tenths that floats cannot represent.
    now = utcnow()
    async with sessions() as session:
        for i in range(1, 301):
            await ledger.record_llm_call(session, **llm(f"t{i}", prompt_tokens=i, at=now))
        for i, tokens in enumerate((100_000, 200_000, 300_000)):  # 0.1, 0.2, 0.3 USD
            await ledger.record_llm_call(
                session, **llm(f"usd{i}", model="m-usd", prompt_tokens=tokens, at=now)
            )
        await session.commit()
    async with sessions() as session:
        assert await ledger.spent(session, WS) == Decimal("0.6000045150")
        totals = await ledger.usage_totals(
            session, ledger.UsageFilter(WS, now - timedelta(hours=1), now + timedelta(hours=1))
        )
    assert totals.cost_usd == Decimal("0.6000045150")
    assert totals.llm_calls == 303 and totals.prompt_tokens == 45150 + 600_000


async def test_spent_counts_this_month_only(sessions: async_sessionmaker[AsyncSession]) -> None:
    month = ledger.start_of_month()
    async with sessions() as session:
        await ledger.record_llm_call(
            session,
            **llm(
                "last-month",
                model="m-usd",
                prompt_tokens=10**6,
                at=month - timedelta(microseconds=1),
            ),
        )
        await ledger.record_llm_call(
            session, **llm("this-month", model="m-usd", prompt_tokens=2 * 10**6, at=month)
        )
        await session.commit()
        assert await ledger.spent(session, WS) == Decimal(2)
        assert await ledger.spent(session, WS, month_start=month - timedelta(days=40)) == 3
        assert await ledger.spent(session, WS, agent_id=5) == 0


def test_start_of_month_is_utc() -> None:
    moment = datetime(2025, 3, 1, 1, 30, tzinfo=UTC)
    east = moment.astimezone(ZoneInfo("Asia/Tokyo"))
    assert ledger.start_of_month(east) == datetime(2025, 3, 1, tzinfo=UTC)
    west = datetime(2025, 2, 28, 20, tzinfo=UTC)
    assert ledger.start_of_month(west) == datetime(2025, 2, 1, tzinfo=UTC)


def test_buckets_cover_the_range_in_utc_hours_and_days() -> None:
    start = datetime(2025, 3, 1, 10, 30, tzinfo=UTC)
    end = datetime(2025, 3, 1, 13, 0, tzinfo=UTC)
    assert ledger.bucket_starts(start, end, "hour") == [
        datetime(2025, 3, 1, h, tzinfo=UTC) for h in (10, 11, 12)
    ]
    assert ledger.bucket_starts(start, end + timedelta(microseconds=1), "hour")[-1].hour == 13
    assert ledger.bucket_starts(start, end, "day") == [datetime(2025, 3, 1, tzinfo=UTC)]
    assert ledger.bucket_count(start, start + timedelta(days=30), "hour") == 721


async def agent(sessions: async_sessionmaker[AsyncSession], name: str) -> int:
    async with sessions() as session:
        row = Agent(workspace_id=WS, name=name, provider="fake", model="fake-echo")
        session.add(row)
        await session.commit()
        return row.id


async def test_budget_block_names_what_is_exhausted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writer = await agent(sessions, "writer")
    other = await agent(sessions, "other")
    async with sessions() as session:
        assert await ledger.budget_block(session, WS, writer) is None  # no budget at all
        await ledger.set_budget(session, WS, None, Decimal("5"))
        await ledger.set_budget(session, WS, writer, Decimal("1.5"))
        await session.commit()
        assert await ledger.budget_block(session, WS, writer) is None
        # $1.50 by the writer: its budget is used up exactly; the workspace's is not.
        await ledger.record_llm_call(
            session, **llm("w", model="m-usd", agent_id=writer, prompt_tokens=1_500_000)
        )
        await session.commit()
        message = await ledger.budget_block(session, WS, writer)
        assert message is not None
        assert message.startswith(
            f"agent {writer} ('writer') has exhausted its monthly "
            "budget of $1.50: $1.50 spent since "
        )
        assert await ledger.budget_block(session, WS, other) is None
        assert await ledger.budget_block(session, WS) is None
        await ledger.record_llm_call(
            session, **llm("o", model="m-usd", agent_id=other, prompt_tokens=3_600_000)
        )
        await session.commit()
        message = await ledger.budget_block(session, WS, other)
        assert message is not None
        assert message.startswith(
            "the workspace's monthly budget of $5.00 is exhausted: $5.10 spent since "
        )
        assert "PUT /api/v1/Billing/budget" in message
        # Removing the budgets lifts the block.
        await ledger.set_budget(session, WS, None, None)
        await ledger.set_budget(session, WS, writer, None)
        await session.commit()
        assert await ledger.budget_block(session, WS, writer) is None


def test_usd_shows_cents_at_least() -> None:
    assert usd_label(Decimal("5")) == "$5.00"
    assert usd_label(Decimal("0.0042")) == "$0.0042"
    assert usd_label(Decimal("12.3456789")) == "$12.345679"
    assert usd_label(Decimal("1000000")) == "$1000000.00"
