"""A SQL statement on SQLite in one round trip to its connection's thread.

aiosqlite runs each SQLite connection in a thread of its own; every call into it is
a round trip: a queue put, a thread switch, and a wake-up of the event loop to take
the result. SQLAlchemy's aiosqlite cursor makes four for a query (open a cursor,
execute, fetch the rows, close the cursor) and three for a write. This cursor does
all of it in one call on the connection's thread and keeps the rows, as SQLAlchemy's
cursor does once it has fetched them.

Measured with ``python -m bench.sqlite_trips`` (docs/benchmarks.md): a model call's
database work, two reads and a committed insert, took 2.5 instead of 4.5 ms of CPU
one at a time, and 4.2 instead of 5.5 ms ten at a time, and less wall time. Under
load, each round trip is also a wait for a busy event loop.

It relies on two private names, aiosqlite's ``Connection._execute`` (run a function on
the connection's thread) and SQLAlchemy's adapted-cursor fields;
tests/infra/test_sqlite_trips.py pins both against the installed versions.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

# What a statement leaves on its cursor: description, rowcount, lastrowid.
_Outcome = tuple[Any, int, Any]
_NOTHING_YET: _Outcome = (None, -1, None)

# An isolation level set on a connection but not applied yet, kept on the aiosqlite
# connection (SQLAlchemy's adapter of it has slots only).
_PENDING_ISOLATION = "_keel_pending_isolation_level"
_NONE_PENDING = object()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, opening, executing, fetching and closing a
    sqlite3 cursor in one call on the connection's thread."""

    __slots__ = ("_outcome",)

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # Unlike the parent, open no aiosqlite cursor here: that is a round trip too.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._outcome = _NOTHING_YET

    @property
    def description(self) -> Any:
        return self._outcome[0]

    @property
    def rowcount(self) -> int:
        return self._outcome[1]

    @property
    def lastrowid(self) -> Any:
        return self._outcome[2]

    @property
    def arraysize(self) -> int:
        return 1  # sqlite3's; the rows are all fetched already

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        pass  # the sqlite3 cursor closed on the connection's thread

    def close(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass  # sqlite3 ignores them

    def execute(self, operation: Any, parameters: Any = None) -> None:
        try:
            await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        try:
            await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        connection = self._connection
        isolation: Any = _NONE_PENDING

        def on_its_thread() -> tuple[_Outcome, list[Any]]:
            if isolation is not _NONE_PENDING:
                connection._conn.isolation_level = isolation
            cursor = connection._conn.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                elif parameters is None:
                    cursor.execute(operation)
                else:
                    cursor.execute(operation, parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else []
                return (description, cursor.rowcount, cursor.lastrowid), rows
            finally:
                cursor.close()

        async with self._adapt_connection._execute_mutex:
            isolation = connection.__dict__.pop(_PENDING_ISOLATION, _NONE_PENDING)
            outcome, rows = await connection._execute(on_its_thread)
        self._outcome = outcome
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection, whose cursors are ``OneTripCursor``, and whose
    isolation level is applied by the next statement's trip rather than a trip of its
    own: sessions that set one (the usage ledger's autocommit) set it when they take the
    connection from the pool, and the pool sets it back when it is returned. Only a
    statement depends on it (sqlite3 begins a transaction before a write unless it is
    None), and SQLAlchemy sets it with no transaction open."""

    __slots__ = ()
    _cursor_cls = OneTripCursor

    @property
    def isolation_level(self) -> str | None:
        pending = self._connection.__dict__.get(_PENDING_ISOLATION, _NONE_PENDING)
        if pending is _NONE_PENDING:
            return cast("str | None", self._connection.isolation_level)
        return cast("str | None", pending)

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.__dict__[_PENDING_ISOLATION] = value


def use_one_trip_cursors(dbapi_connection: Any) -> None:
    """Give a new connection of our engine (SQLAlchemy's "connect" event) one-trip
    cursors: only that engine's connections, not every aiosqlite engine in the process."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneTripConnection
