"""Async engine and sessions for SQLite (embedded) and MySQL/MariaDB (production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from infra.sqlite_trips import use_one_trip_cursors


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The API and the worker are separate processes on one file: wait for locks.
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _set_up_connection(dbapi_conn: Any, _record: Any) -> None:
            use_one_trip_cursors(dbapi_conn)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        _end_only_open_transactions(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 1800)
    if parsed.get_backend_name() == "mysql":
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        # Under InnoDB's default (REPEATABLE READ) a locking read by execution id also
        # locks the gaps beside it, so two runs recording events at once deadlock on
        # each other's neighbours. Keel's writers serialize on row locks (``FOR
        # UPDATE``), which READ COMMITTED keeps, without the gap locks.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_async_engine(parsed, **kwargs)


def _end_only_open_transactions(engine: AsyncEngine) -> None:
    """Skip the rollback or commit of a SQLite connection that has no transaction open.

    The sqlite3 module begins a transaction only before a write, so a connection that
    only read, or whose writes committed as they ran (autocommit), has nothing to roll
    back or commit (sqlite3's own rollback and commit do nothing then). Yet each is a
    round trip to the connection's aiosqlite thread, and a session's close pays two
    rollbacks: its transaction's, then the pool's reset on return. A read-only request
    or activity paid a third of its database round trips for nothing."""
    dialect = engine.sync_engine.dialect
    roll_back, commit = dialect.do_rollback, dialect.do_commit

    def open_transaction(dbapi_connection: Any) -> bool:
        try:
            return bool(dbapi_connection.driver_connection.in_transaction)
        except Exception:  # closed or broken: let the real rollback or commit deal with it
            return True

    def do_rollback(dbapi_connection: Any) -> None:
        if open_transaction(dbapi_connection):
            roll_back(dbapi_connection)

    def do_commit(dbapi_connection: Any) -> None:
        if open_transaction(dbapi_connection):
            commit(dbapi_connection)

    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    dialect.do_commit = do_commit  # type: ignore[method-assign]


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def one_statement_writes(
    factory: async_sessionmaker[AsyncSession],
) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
    """Connections for writes of one statement each (the usage ledger's insert), on
    ``factory``'s engine; a plain connection, not a session: such a write needs none of
    the session's bookkeeping (about 0.4 ms of CPU per write, in process).

    SQLite has one write lock for the whole file, taken by a transaction's first write
    and held until its commit. The commit is another round trip, and under load it waits
    its turn on a busy event loop, 10 ms and more, while every other writer of both
    processes waits for the lock. On SQLite these connections commit each statement as
    it runs, so the lock is held only while it runs. Elsewhere (MySQL, with row locks)
    each is a transaction, committed as the block ends."""
    engine: AsyncEngine = factory.kw["bind"]
    if engine.dialect.name != "sqlite":
        return engine.begin
    return engine.execution_options(isolation_level="AUTOCOMMIT").connect


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session, session.begin():
        yield session
