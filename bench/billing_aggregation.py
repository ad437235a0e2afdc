"""Billing aggregation over a large ledger: how long each billing query takes.

    .venv/bin/python -m bench.billing_aggregation [--rows 1000000] [--repeat 7]
    KEEL_BENCH_MYSQL_URL=$(bash .ci/mariadb.sh) .venv/bin/python -m bench.billing_aggregation

Generates ``--rows`` usage rows (one workspace, 50 agents, 20 workflows, 10 rows per
execution, 85% LLM calls and 15% tool calls, 1% of LLM calls on an unpriced model)
spread evenly over the last 30 days, in a temporary SQLite database migrated like a
real one and, when ``KEEL_BENCH_MYSQL_URL`` is set, in a scratch MariaDB/MySQL
database ``keel_test_bench_<random>`` on that server (dropped afterwards). Then it
times every billing query through the functions the API calls (infra.ledger), each
``--repeat`` times after one warm-up run, and prints median, min and max in ms.

``--without-billing-indexes`` drops the indexes migration 0002 adds to usage_records
before inserting, to show what they are worth.

Not a test: the figures depend on the machine (and on what else it is doing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import ledger
from infra.db import create_engine, session_factory
from infra.migrate import upgrade
from infra.models import DEFAULT_WORKSPACE_ID, Budget, UsageRecord
from infra.pricing import Pricing, Tokens

AGENTS = 50
WORKFLOWS = 20
CALLS_PER_EXECUTION = 10
DAYS = 30
CHUNK = 10_000
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "claude-sonnet-4-5", "o4-mini"]
UNPRICED_MODEL = "llama3.1:8b"
WS = DEFAULT_WORKSPACE_ID


def generate(rows: int, end: datetime, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    """Rows in chunks, priced by the real pricing table, oldest first."""
    rng = random.Random(seed)
    pricing = Pricing()
    span = timedelta(days=DAYS).total_seconds()
    start = end - timedelta(days=DAYS)
    chunk: list[dict[str, Any]] = []
    for i in range(rows):
        execution = i // CALLS_PER_EXECUTION + 1
        at = start + timedelta(seconds=span * i / rows)
        agent = rng.randrange(1, AGENTS + 1)
        workflow = execution % WORKFLOWS + 1
        common = {
            "workspace_id": WS,
            "execution_id": execution,
            "workflow_id": workflow,
            "node_id": f"n{i % CALLS_PER_EXECUTION}",
            "created_at": at,
            "idempotency_key": f"x:{execution}:{i}",
            "latency_ms": rng.uniform(50, 900),
        }
        if rng.random() < 0.15:
            chunk.append(
                {
                    **common,
                    "agent_id": agent if rng.random() < 0.7 else None,
                    "kind": "tool",
                    "provider": None,
                    "model": None,
                    "tool_name": "search",
                    "ok": rng.random() < 0.97,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "total_tokens": 0,
                    "cached_tokens": 0,
                    "reasoning_tokens": 0,
                    "input_usd_per_mtok": Decimal(0),
                    "output_usd_per_mtok": Decimal(0),
                    "cost_usd": Decimal(0),
                    "unpriced": False,
                }
            )
        else:
            model = UNPRICED_MODEL if rng.random() < 0.01 else MODELS[agent % len(MODELS)]
            prompt, completion = rng.randrange(50, 4000), rng.randrange(10, 1200)
            cached = rng.randrange(0, prompt) if rng.random() < 0.3 else 0
            cost, price, unpriced = pricing.cost(Tokens(prompt, completion, cached), model)
            chunk.append(
                {
                    **common,
                    "agent_id": agent,
                    "kind": "llm",
                    "provider": "openai",
                    "model": model,
                    "tool_name": None,
                    "ok": True,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "cached_tokens": cached,
                    "reasoning_tokens": 0,
                    "input_usd_per_mtok": price.input,
                    "output_usd_per_mtok": price.output,
                    "cost_usd": cost,
                    "unpriced": unpriced,
                }
            )
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sync_url(url: str) -> str:
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+pysqlite", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}[
        parsed.get_backend_name()
    ]
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


BILLING_INDEXES = (
    "ix_usage_workspace_time_covering",
    "ix_usage_agent_time_covering",
    "ix_usage_workspace_unpriced_time",
)


def drop_billing_indexes(url: str) -> None:
    engine = create_sync_engine(sync_url(url))
    with engine.begin() as conn:
        for name in BILLING_INDEXES:
            conn.execute(
                text(
                    f"DROP INDEX {name}"
                    if engine.dialect.name == "sqlite"
                    else f"DROP INDEX {name} ON usage_records"
                )
            )
    engine.dispose()


def fill(url: str, rows: int, end: datetime) -> float:
    """Bulk-insert the rows (executemany in chunks); returns seconds taken."""
    engine = create_sync_engine(sync_url(url))
    began = time.perf_counter()
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA synchronous=OFF"))
        for number, chunk in enumerate(generate(rows, end), 1):
            conn.execute(insert(UsageRecord), chunk)
            if number % 20 == 0:
                print(f"  {number * CHUNK:>9,} rows", file=sys.stderr, flush=True)
    with engine.begin() as conn:
        conn.execute(
            text("ANALYZE" if engine.dialect.name == "sqlite" else "ANALYZE TABLE usage_records")
        )
    engine.dispose()
    return time.perf_counter() - began


Query = Callable[[], Awaitable[Any]]


def queries(engine: AsyncEngine, end: datetime) -> list[tuple[str, Query]]:
    sessions = session_factory(engine)
    month = ledger.UsageFilter(WS, end - timedelta(days=DAYS), end)
    agent = ledger.UsageFilter(WS, month.start, end, agent_id=7)
    flow = ledger.UsageFilter(WS, month.start, end, workflow_id=3)
    day = ledger.UsageFilter(WS, end - timedelta(days=1), end)

    def run(call: Callable[[Any], Awaitable[Any]]) -> Query:
        async def go() -> Any:
            async with sessions() as session:
                return await call(session)

        return go

    return [
        ("usage, 30 days", run(lambda s: ledger.usage_totals(s, month))),
        ("usage, 30 days, agent", run(lambda s: ledger.usage_totals(s, agent))),
        ("usage, 30 days, workflow", run(lambda s: ledger.usage_totals(s, flow))),
        ("usage, last 24 h", run(lambda s: ledger.usage_totals(s, day))),
        ("agent-breakdown, 30 days", run(lambda s: ledger.agent_breakdown(s, month))),
        ("agent-breakdown, 30 days, agent", run(lambda s: ledger.agent_breakdown(s, agent))),
        ("history hour, 30 days", run(lambda s: ledger.usage_history(s, month, "hour"))),
        ("history hour, 30 days, agent", run(lambda s: ledger.usage_history(s, agent, "hour"))),
        ("history day, 30 days", run(lambda s: ledger.usage_history(s, month, "day"))),
        ("history day, 30 days, agent", run(lambda s: ledger.usage_history(s, agent, "day"))),
        ("spent, workspace, 30 days", run(lambda s: ledger.spent(s, WS, month_start=month.start))),
        (
            "spent, agent, 30 days",
            run(lambda s: ledger.spent(s, WS, agent_id=7, month_start=month.start)),
        ),
        ("budget_block, no budget set", run(lambda s: ledger.budget_block(s, WS, 7))),
    ]


async def measure(query: Query, repeat: int) -> list[float]:
    await query()  # warm-up: connection, caches
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await query()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def time_all(url: str, end: datetime, repeat: int) -> list[tuple[str, list[float]]]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        results = [(name, await measure(query, repeat)) for name, query in queries(engine, end)]
        # Once a budget exists, every check sums the month so far.
        async with sessions() as session:
            session.add(Budget(workspace_id=WS, agent_id=None, monthly_usd=Decimal(10**6)))
            await session.commit()

        async def blocked() -> Any:
            async with sessions() as session:
                return await ledger.budget_block(session, WS)

        results.append(("budget_block, workspace budget set", await measure(blocked, repeat)))
    finally:
        await engine.dispose()
    return results


def show(title: str, rows: int, fill_s: float, results: list[tuple[str, list[float]]]) -> None:
    print(f"\n{title}: {rows:,} usage rows (inserted in {fill_s:.1f} s)")
    width = max(len(name) for name, _ in results)
    print(f"  {'query':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}")
    for name, samples in results:
        print(
            f"  {name:<{width}}  {statistics.median(samples):>7.1f}ms  "
            f"{min(samples):>7.1f}ms  {max(samples):>7.1f}ms"
        )


async def bench(title: str, url: str, args: argparse.Namespace) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    rows, repeat = args.rows, args.repeat
    await asyncio.to_thread(upgrade, url)
    if args.without_billing_indexes:
        await asyncio.to_thread(drop_billing_indexes, url)
        title += ", without the 0002 billing indexes"
    print(f"{title}: inserting {rows:,} rows...", file=sys.stderr, flush=True)
    fill_s = await asyncio.to_thread(fill, url, rows, end)
    show(title, rows, fill_s, await time_all(url, end, repeat))


async def bench_mysql(server_url: str, args: argparse.Namespace) -> None:
    server = make_url(server_url)
    name = f"keel_test_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.render_as_string(hide_password=False))
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        await bench(f"MariaDB/MySQL ({server.host})", url, args)
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        await admin.dispose()


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        await bench("SQLite", f"sqlite+aiosqlite:///{Path(tmp) / 'keel.db'}", args)
    server = os.environ.get("KEEL_BENCH_MYSQL_URL", "")
    if args.sqlite_only:
        return
    if server:
        await bench_mysql(server, args)
    else:
        print("\n(KEEL_BENCH_MYSQL_URL is not set: MariaDB/MySQL skipped)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--sqlite-only",
        action="store_true",
        help="skip MariaDB/MySQL even when KEEL_BENCH_MYSQL_URL is set",
    )
    parser.add_argument(
        "--without-billing-indexes",
        action="store_true",
        help="drop the usage_records indexes of migration 0002 first",
    )
    asyncio.run(amain(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
