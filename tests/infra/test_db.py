"""The SQLite engine rolls back only a transaction that is open: a connection that only
read is given back to the pool without a round trip to its aiosqlite thread, and a
write left uncommitted is still undone. One-statement writes (the usage ledger's)
commit as they run on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from infra.db import create_engine, one_statement_writes, session_factory


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    # One connection, so every session below gets the same one back from the pool.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (body TEXT)"))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each rollback that reached a connection's aiosqlite thread: whether it had a
    transaction to undo."""
    seen: list[bool] = []
    real = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        seen.append(self.in_transaction)
        await real(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    return seen


async def _open_transaction(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return bool(raw.driver_connection.in_transaction)  # type: ignore[union-attr]


async def test_a_read_only_session_closes_without_a_rollback(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    async with session_factory(engine)() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar() == 0
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    assert rollbacks == []


async def test_an_uncommitted_write_is_rolled_back(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        await session.execute(text("INSERT INTO notes VALUES ('not kept')"))
    assert rollbacks == [True]  # one rollback, of an open transaction
    assert not await _open_transaction(engine)  # the pool got it back clean
    async with sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar() == 0


async def test_a_committed_write_stays_and_needs_no_rollback(
    engine: AsyncEngine, rollbacks: list[bool]
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO notes VALUES ('kept')"))
    assert rollbacks == []
    async with sessions() as session:
        assert (await session.execute(text("SELECT body FROM notes"))).scalar() == "kept"


async def test_a_failed_write_is_rolled_back(engine: AsyncEngine, rollbacks: list[bool]) -> None:
    sessions = session_factory(engine)
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await session.execute(text("INSERT INTO notes VALUES ('half done')"))
            raise RuntimeError("the work failed after its write")
    assert rollbacks == [True]
    assert not await _open_transaction(engine)
    async with sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar() == 0


async def _holds_the_write_lock(on: AsyncSession | AsyncConnection) -> bool:
    connection = await on.connection() if isinstance(on, AsyncSession) else on
    raw = await connection.get_raw_connection()
    return bool(raw.driver_connection.in_transaction)  # type: ignore[union-attr]


async def test_a_one_statement_write_holds_sqlite_write_lock_only_while_it_runs(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(text("INSERT INTO notes VALUES ('a')"))
        assert await _holds_the_write_lock(session)  # until the commit, a trip later

    async with one_statement_writes(sessions)() as connection:
        await connection.execute(text("INSERT INTO notes VALUES ('b')"))
        assert not await _holds_the_write_lock(connection)  # committed as it ran

    assert not await _open_transaction(engine)  # the pool got it back as it was
    async with sessions() as session:
        await session.execute(text("INSERT INTO notes VALUES ('c')"))
        assert await _holds_the_write_lock(session)  # ordinary sessions: a transaction
        await session.commit()
        rows = await session.execute(text("SELECT body FROM notes ORDER BY body"))
        assert rows.scalars().all() == ["a", "b", "c"]


def test_one_statement_writes_elsewhere_are_transactions() -> None:
    engine = create_engine("mysql+aiomysql://keel@127.0.0.1:1/keel")
    assert one_statement_writes(session_factory(engine)) == engine.begin
