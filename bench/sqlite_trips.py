"""What a round trip to SQLite's connection thread costs, in process: our engine's
one-trip cursor (infra/sqlite_trips.py) against SQLAlchemy's aiosqlite cursor on the
same engine otherwise (same pragmas, same pool, same file).

    python -m bench.sqlite_trips [--units 1000] [--rounds 4]

A unit is a model-call activity's database work: two reads in one session (the budget
and the agent's key), then an insert committed in another (the usage ledger's row).
Units run one at a time, then ten at a time (``asyncio.gather``), as under load. The
figures are per unit: CPU milliseconds of this process (``time.process_time``, the
connection threads included) and wall milliseconds, median and range over the rounds,
which alternate the two cursors so that a noisy stretch of the machine hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.db import create_engine, session_factory

CONCURRENT = 10
SCHEMA = (
    "CREATE TABLE budget (workspace_id INTEGER, agent_id INTEGER, monthly_usd TEXT)",
    "CREATE TABLE agent (id INTEGER PRIMARY KEY, workspace_id INTEGER, api_key TEXT)",
    "CREATE TABLE usage (id INTEGER PRIMARY KEY, workspace_id INTEGER, agent_id INTEGER,"
    " node_id TEXT, tokens INTEGER, cost_usd TEXT)",
    "INSERT INTO agent (id, workspace_id, api_key) VALUES (1, 1, NULL)",
)


def engine_with(cursor: str, path: Path) -> AsyncEngine:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    if cursor == "SQLAlchemy's":

        @event.listens_for(engine.sync_engine, "connect")
        def _back_to_sqlalchemys(dbapi_connection: Any, _record: Any) -> None:
            # After our own listener: its connections get SQLAlchemy's cursor again.
            dbapi_connection.__class__ = AsyncAdapt_aiosqlite_connection

    return engine


async def activity_unit(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(
            text("SELECT agent_id, monthly_usd FROM budget WHERE workspace_id = :w"), {"w": 1}
        )
        await session.execute(
            text("SELECT api_key FROM agent WHERE id = :a AND workspace_id = :w"), {"a": 1, "w": 1}
        )
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO usage (workspace_id, agent_id, node_id, tokens, cost_usd)"
                " VALUES (1, 1, 'n1', 42, '0.0001')"
            )
        )


async def per_unit(
    run: Callable[[], Awaitable[None]], units: int, at_once: int
) -> tuple[float, float]:
    """CPU and wall milliseconds per unit, ``at_once`` units in flight."""
    batches = max(1, units // at_once)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        await asyncio.gather(*(run() for _ in range(at_once)))
    done = batches * at_once  # what ran, when ``units`` is not a multiple of ``at_once``
    return (
        (time.process_time() - cpu) * 1000 / done,
        (time.perf_counter() - wall) * 1000 / done,
    )


async def measure(units: int, rounds: int) -> dict[tuple[str, int, str], list[float]]:
    figures: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="keel-sqlite-trips-") as tmp:
        engines = {
            cursor: engine_with(cursor, Path(tmp) / "db.sqlite")
            for cursor in ("one-trip", "SQLAlchemy's")
        }
        try:
            async with engines["one-trip"].begin() as conn:
                for statement in SCHEMA:
                    await conn.execute(text(statement))
            units_of = {c: session_factory(e) for c, e in engines.items()}
            for sessions in units_of.values():  # warm: connections, statement caches
                await per_unit(lambda s=sessions: activity_unit(s), 100, 1)
            for _ in range(rounds):
                for cursor, sessions in units_of.items():
                    for at_once in (1, CONCURRENT):
                        cpu, wall = await per_unit(
                            lambda s=sessions: activity_unit(s), units, at_once
                        )
                        figures.setdefault((cursor, at_once, "cpu"), []).append(cpu)
                        figures.setdefault((cursor, at_once, "wall"), []).append(wall)
        finally:
            for engine in engines.values():
                await engine.dispose()
    return figures


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.units, args.rounds))
    lines = [
        f"{args.rounds} rounds of {args.units} units per cursor and concurrency; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "| cursor | units at once | CPU ms per unit | wall ms per unit |",
        "| --- | --- | --- | --- |",
    ]
    for cursor in ("SQLAlchemy's", "one-trip"):
        for at_once in (1, CONCURRENT):
            lines.append(
                f"| {cursor} | {at_once} | {spread(figures[cursor, at_once, 'cpu'])} "
                f"| {spread(figures[cursor, at_once, 'wall'])} |"
            )
    os.write(1, ("\n".join(lines) + "\n").encode())  # a report on stdout, not a log line


if __name__ == "__main__":
    main()
