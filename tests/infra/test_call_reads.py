"""What a model call reads before it starts (activities.call_reads), on a real database:
remembered per workspace and agent for its bound and no longer; what has been spent is
summed before every call all the same."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from activities.call_reads import CallReadsCache
from activities.secrets import StoredKey
from infra import ledger
from infra.db import session_factory
from infra.models import DEFAULT_WORKSPACE_ID, Agent
from infra.pricing import Price, Pricing

WS = DEFAULT_WORKSPACE_ID
URL = "http://127.0.0.1:9/v1"
TTL_S = 1.0
PRICING = Pricing({"m-usd": Price(Decimal("1"), Decimal("0"))})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sessions(db: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(db)


@pytest.fixture
def queries(db: AsyncEngine) -> Iterator[list[str]]:
    """Every statement sent to the database from here on."""
    sent: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(db.sync_engine, "before_cursor_execute", count)
    yield sent
    event.remove(db.sync_engine, "before_cursor_execute", count)


async def agent(sessions: async_sessionmaker[AsyncSession], name: str, key: str | None) -> int:
    async with sessions() as session:
        row = Agent(
            workspace_id=WS,
            name=name,
            provider="openai",
            model="m-usd",
            base_url=URL,
            api_key_encrypted=key,
        )
        session.add(row)
        await session.commit()
        return row.id


async def set_budget(
    sessions: async_sessionmaker[AsyncSession], agent_id: int | None, usd: str | None
) -> None:
    async with sessions() as session:
        await ledger.set_budget(session, WS, agent_id, None if usd is None else Decimal(usd))
        await session.commit()


async def test_reads_are_remembered_for_their_bound_per_workspace_and_agent(
    sessions: async_sessionmaker[AsyncSession], queries: list[str]
) -> None:
    writer = await agent(sessions, "writer", "sealed-1")
    other = await agent(sessions, "other", None)
    clock = Clock()
    cache = CallReadsCache(sessions, TTL_S, clock=clock)
    queries.clear()

    first = await cache.get(WS, writer, URL)
    assert first.budgets == []
    assert first.stored_key == StoredKey(URL, "sealed-1")
    assert len(queries) == 2  # the budgets in scope, the agent's key

    # A budget and a new key, set just after: a call within the bound does not see them
    # and sends no query; another agent's call reads its own.
    await set_budget(sessions, writer, "5")
    async with sessions() as session:
        await session.execute(
            update(Agent).where(Agent.id == writer).values(api_key_encrypted="sealed-2")
        )
        await session.commit()
    queries.clear()
    clock.now += TTL_S * 0.9
    assert await cache.get(WS, writer, URL) == first
    assert queries == []
    assert (await cache.get(WS, other, URL)).stored_key == StoredKey(URL, None)
    assert len(queries) == 2

    # Past the bound, both are read again.
    clock.now += TTL_S * 0.2
    later = await cache.get(WS, writer, URL)
    assert later.budgets == [(writer, Decimal("5"), "writer")]
    assert later.stored_key == StoredKey(URL, "sealed-2")

    gone = await cache.get(WS, writer + other + 100, URL)
    assert gone.stored_key is None  # no such agent: no key, as before


async def test_no_bound_reads_before_every_call(
    sessions: async_sessionmaker[AsyncSession], queries: list[str]
) -> None:
    writer = await agent(sessions, "writer", None)
    cache = CallReadsCache(sessions, 0)
    assert (await cache.get(WS, writer, URL)).budgets == []
    await set_budget(sessions, None, "5")
    queries.clear()
    assert (await cache.get(WS, writer, URL)).budgets == [(None, Decimal("5"), None)]
    assert len(queries) == 2


async def test_what_was_spent_is_summed_before_every_call(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The budgets are remembered, the spending is not: a call that crosses a budget
    blocks the next call at once, within the bound."""
    writer = await agent(sessions, "writer", None)
    await set_budget(sessions, writer, "1")
    clock = Clock()
    cache = CallReadsCache(sessions, TTL_S, clock=clock)
    reads = await cache.get(WS, writer, URL)
    async with sessions() as session:
        assert await ledger.first_exhausted(session, WS, [writer], reads.budgets) is None
        await ledger.record_llm_call(
            session,
            key="crossing",
            workspace_id=WS,
            execution_id=None,
            workflow_id=None,
            agent_id=writer,
            node_id="a",
            provider="openai",
            model="m-usd",
            prompt_tokens=1_000_000,
            completion_tokens=0,
            pricing=PRICING,
        )
        await session.commit()
    assert await cache.get(WS, writer, URL) is reads  # still within the bound
    async with sessions() as session:
        blocked = await ledger.first_exhausted(session, WS, [writer], reads.budgets)
    assert blocked is not None and blocked.startswith(f"agent {writer} ('writer') has exhausted")


async def test_the_oldest_entries_go_first(
    sessions: async_sessionmaker[AsyncSession], queries: list[str]
) -> None:
    ids = [await agent(sessions, f"a{i}", None) for i in range(3)]
    cache = CallReadsCache(sessions, TTL_S, max_entries=2, clock=Clock())
    for agent_id in ids:
        await cache.get(WS, agent_id, URL)
    queries.clear()
    await cache.get(WS, ids[2], URL)
    await cache.get(WS, ids[1], URL)
    assert queries == []  # the two newest are remembered...
    await cache.get(WS, ids[0], URL)
    assert len(queries) == 2  # ...and the oldest was let go


async def test_a_key_remembered_for_another_base_url_is_read_again(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A run started after its agent was repointed (and given a new key) is not refused
    for what the worker remembered of the agent before."""
    writer = await agent(sessions, "writer", "sealed-old")
    cache = CallReadsCache(sessions, TTL_S, clock=Clock())
    assert (await cache.get(WS, writer, URL)).stored_key == StoredKey(URL, "sealed-old")
    moved = "http://127.0.0.1:10/v1"
    async with sessions() as session:
        await session.execute(
            update(Agent)
            .where(Agent.id == writer)
            .values(base_url=moved, api_key_encrypted="sealed-new")
        )
        await session.commit()
    # A run from before the move still gets what it started with, within the bound...
    assert (await cache.get(WS, writer, URL)).stored_key == StoredKey(URL, "sealed-old")
    # ...and a run that started after it reads the agent again.
    assert (await cache.get(WS, writer, moved)).stored_key == StoredKey(moved, "sealed-new")
