"""Our SQLite engine runs each statement in one round trip to the connection's aiosqlite
thread, and its cursor still answers SQLAlchemy as the library's own does: rows,
column names, row counts, generated keys, many-row writes, errors, rollbacks. These
tests also pin the private names infra/sqlite_trips.py relies on: a version of
aiosqlite or SQLAlchemy that changes them fails here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infra.db import create_engine, one_statement_writes, session_factory
from infra.sqlite_trips import OneTripConnection

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", String(50), nullable=False, unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each call that went to a connection's aiosqlite thread, by the function's name;
    SQLAlchemy's setter of an isolation level goes there by a way of its own."""
    seen: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object) -> object:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args)

    isolation: property = AsyncAdapt_aiosqlite_connection.__dict__["isolation_level"]

    def set_isolation(self: AsyncAdapt_aiosqlite_connection, value: str | None) -> None:
        seen.append("isolation_level")
        assert isolation.fset is not None
        isolation.fset(self, value)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    monkeypatch.setattr(
        AsyncAdapt_aiosqlite_connection, "isolation_level", property(isolation.fget, set_isolation)
    )
    return seen


async def test_a_query_is_one_trip_and_a_write_one_more_to_commit(
    engine: AsyncEngine, trips: list[str]
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session:
        await session.execute(select(notes))  # the pool's connection, opened and set up
    trips.clear()
    async with sessions() as session:
        assert (await session.execute(select(notes.c.body))).all() == []
    assert trips == ["on_its_thread"]
    trips.clear()
    async with sessions() as session, session.begin():
        await session.execute(insert(notes).values(body="one"))
    assert trips == ["on_its_thread", "commit"]
    trips.clear()
    async with sessions() as session, session.begin():
        await session.execute(select(notes.c.body))
    assert trips == ["on_its_thread"]  # nothing written, so no commit to send


async def test_a_one_statement_write_is_one_trip_and_its_return_one_more(
    engine: AsyncEngine, trips: list[str]
) -> None:
    """The usage ledger's writes: the insert's own trip sets autocommit on the
    connection, no commit is left to send, and the pool's reset on return (the isolation
    level back, with its PRAGMA) is one trip."""
    ledger = one_statement_writes(session_factory(engine))
    async with ledger() as connection:
        await connection.execute(insert(notes).values(body="warm"))
    trips.clear()
    async with ledger() as connection:
        await connection.execute(insert(notes).values(body="one"))
    assert trips == ["on_its_thread", "on_its_thread"]
    async with session_factory(engine)() as session:
        assert (await session.execute(select(notes.c.body))).scalars().all() == ["warm", "one"]


async def test_rows_and_their_columns_come_back(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(insert(notes), [{"body": "a"}, {"body": "b"}, {"body": "c"}])
    async with sessions() as session:
        result = await session.execute(select(notes.c.id, notes.c.body).order_by(notes.c.id))
        assert list(result.keys()) == ["id", "body"]
        assert [tuple(row) for row in result] == [(1, "a"), (2, "b"), (3, "c")]
        first = await session.execute(select(notes.c.body).order_by(notes.c.id))
        assert first.first() == ("a",)
        assert (await session.scalars(select(notes.c.body).limit(2))).all() == ["a", "b"]


async def test_written_rows_are_counted_and_a_generated_key_returned(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        added = await session.execute(insert(notes).values(body="x"))
        assert added.inserted_primary_key == (1,)
        returned = await session.execute(insert(notes).values(body="y").returning(notes.c.id))
        assert returned.scalar_one() == 2
        many = await session.execute(
            text("INSERT INTO notes (body) VALUES (:b)"),
            [
                {"b": "p"},
                {"b": "q"},
            ],
        )
        assert many.rowcount == 2
        changed = await session.execute(
            text("UPDATE notes SET body = body || '!' WHERE body IN ('x', 'y', 'none')")
        )
        assert changed.rowcount == 2
    async with sessions() as session:
        assert (await session.scalars(select(notes.c.body).order_by(notes.c.id))).all() == [
            "x!",
            "y!",
            "p",
            "q",
        ]


async def test_a_failed_statement_raises_sqlalchemy_errors_and_undoes_the_transaction(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await session.execute(insert(notes).values(body="taken"))
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await session.execute(insert(notes).values(body="kept only if all goes well"))
            await session.execute(insert(notes).values(body="taken"))
    with pytest.raises(OperationalError):
        async with sessions() as session:
            await session.execute(text("SELECT nothing FROM nowhere"))
    async with sessions() as session:
        assert (await session.scalars(select(notes.c.body))).all() == ["taken"]


async def test_only_our_engine_gets_the_cursor(tmp_path: Path, engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        ours = (await conn.get_raw_connection()).dbapi_connection
    assert type(ours) is OneTripConnection
    plain = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.sqlite'}")
    try:
        async with plain.connect() as conn:
            theirs = (await conn.get_raw_connection()).dbapi_connection
        assert type(theirs) is not OneTripConnection
    finally:
        await plain.dispose()
