"""Usage reports: totals, per agent, per UTC hour or day, and per execution.

Every report aggregates in SQL (SUM/COUNT/GROUP BY); no usage row is loaded into
Python. Amounts are summed exactly (``infra.usd.usd_sum``). Time buckets are UTC hours
or days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, Integer, distinct, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.models import Agent, UsageRecord
from infra.usd import usd_from_sum, usd_sum

Granularity = Literal["hour", "day"]

# MySQL DATETIME holds years 1000..9999; a range asked beyond that is clamped.
DB_MIN_TIME = datetime(1000, 1, 1, tzinfo=UTC)
DB_MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
STEPS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 10_000  # ~416 days of hours, ~27 years of days


def _int(value: Any) -> int:
    return int(value or 0)  # MySQL sums integers as DECIMAL


@dataclass(frozen=True)
class UsageFilter:
    """Rows of one workspace with ``start <= created_at < end`` (aware datetimes)."""

    workspace_id: int
    start: datetime
    end: datetime
    agent_id: int | None = None
    workflow_id: int | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions = [
            UsageRecord.workspace_id == self.workspace_id,
            UsageRecord.created_at >= max(self.start, DB_MIN_TIME),
            UsageRecord.created_at < min(self.end, DB_MAX_TIME),
        ]
        if self.agent_id is not None:
            conditions.append(UsageRecord.agent_id == self.agent_id)
        if self.workflow_id is not None:
            conditions.append(UsageRecord.workflow_id == self.workflow_id)
        return conditions


@dataclass
class UsageTotals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    llm_calls: int = 0
    tool_calls: int = 0
    executions: int = 0
    unpriced_calls: int = 0


@dataclass
class AgentUsage:
    agent_id: int
    agent_name: str | None  # None: the agent has been deleted since
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal
    llm_calls: int
    tool_calls: int
    unpriced_calls: int
    unpriced_models: list[str] = field(default_factory=list)


@dataclass
class UsageBucket:
    bucket_start: datetime
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    llm_calls: int = 0
    tool_calls: int = 0


def _is(kind: str) -> ColumnElement[Any]:
    # SUM of a comparison (0 or 1 on both databases): cheaper than SUM(CASE ...).
    return func.sum(UsageRecord.kind == kind, type_=Integer)


def _unpriced_calls() -> ColumnElement[Any]:
    return func.sum(UsageRecord.unpriced, type_=Integer)


async def usage_totals(session: AsyncSession, filters: UsageFilter) -> UsageTotals:
    dialect = session.get_bind().dialect.name
    row = (
        await session.execute(
            select(
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.total_tokens),
                usd_sum(dialect, UsageRecord.cost_usd),
                _is("llm"),
                _is("tool"),
                func.count(distinct(UsageRecord.execution_id)),
                _unpriced_calls(),
            ).where(*filters.where())
        )
    ).one()
    return UsageTotals(
        _int(row[0]),
        _int(row[1]),
        _int(row[2]),
        usd_from_sum(dialect, row[3]),
        _int(row[4]),
        _int(row[5]),
        _int(row[6]),
        _int(row[7]),
    )


async def agent_breakdown(session: AsyncSession, filters: UsageFilter) -> list[AgentUsage]:
    """Usage per agent (rows that name an agent), most expensive first."""
    dialect = session.get_bind().dialect.name
    # SQLite, given ANALYZE statistics, would walk the (agent_id, created_at) index to
    # group without sorting, then fetch every row at random: 2-10x slower than reading
    # the time range through the covering index and sorting. "+agent_id" hides it.
    group: Any = (
        literal_column(f"+{UsageRecord.__tablename__}.agent_id")
        if dialect == "sqlite"
        else UsageRecord.agent_id
    )
    cost = usd_sum(dialect, UsageRecord.cost_usd).label("cost")
    total = func.sum(UsageRecord.total_tokens).label("total")
    grouped = (
        select(
            UsageRecord.agent_id.label("agent_id"),
            func.sum(UsageRecord.prompt_tokens).label("prompt"),
            func.sum(UsageRecord.completion_tokens).label("completion"),
            total,
            cost,
            _is("llm").label("llm_calls"),
            _is("tool").label("tool_calls"),
            _unpriced_calls().label("unpriced_calls"),
        )
        .where(*filters.where(), UsageRecord.agent_id.is_not(None))
        .group_by(group)
        .subquery()
    )
    rows = (
        await session.execute(
            select(grouped, Agent.name)
            .outerjoin(Agent, Agent.id == grouped.c.agent_id)
            .order_by(grouped.c.cost.desc(), grouped.c.total.desc(), grouped.c.agent_id)
        )
    ).all()
    items = [
        AgentUsage(
            _int(r.agent_id),
            r.name,
            _int(r.prompt),
            _int(r.completion),
            _int(r.total),
            usd_from_sum(dialect, r.cost),
            _int(r.llm_calls),
            _int(r.tool_calls),
            _int(r.unpriced_calls),
        )
        for r in rows
    ]
    flagged = {i.agent_id: i for i in items if i.unpriced_calls}
    if flagged:  # name the models, found through the (workspace, unpriced, time) index
        for agent_id, model in (
            await session.execute(
                select(UsageRecord.agent_id, UsageRecord.model)
                .where(
                    *filters.where(),
                    UsageRecord.agent_id.is_not(None),
                    # "= true", not "IS TRUE": only the former can use an index on MySQL
                    UsageRecord.unpriced == True,  # noqa: E712
                )
                .group_by(group, UsageRecord.model)
                .order_by(UsageRecord.model)
            )
        ).all():
            if _int(agent_id) in flagged:
                flagged[_int(agent_id)].unpriced_models.append(str(model))
    return items


def floor_time(moment: datetime, granularity: Granularity) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def bucket_count(start: datetime, end: datetime, granularity: Granularity) -> int:
    span = end - floor_time(start, granularity)
    return max(0, math.ceil(span / STEPS[granularity]))


def bucket_starts(start: datetime, end: datetime, granularity: Granularity) -> list[datetime]:
    """Every UTC hour or day that overlaps ``[start, end)``, oldest first."""
    first, step = floor_time(start, granularity), STEPS[granularity]
    return [first + i * step for i in range(bucket_count(start, end, granularity))]


def bucket_expression(dialect: str, granularity: Granularity, column: Any) -> ColumnElement[Any]:
    """The UTC hour or day a timestamp falls in, as ISO text (``YYYY-MM-DD HH...``).

    Both databases store UTC without an offset (infra.dbtypes.UTCDateTime). SQLite
    keeps it as fixed-width ``YYYY-MM-DD HH:MM:SS.ffffff`` text, so the bucket is a
    prefix: substr() is twice as fast as strftime() on a million rows, same result.
    """
    if dialect == "sqlite":
        return func.substr(column, 1, 13 if granularity == "hour" else 10)
    if dialect in ("mysql", "mariadb"):
        fmt = "%Y-%m-%d %H:00:00" if granularity == "hour" else "%Y-%m-%d"
        return func.date_format(column, literal_column(f"'{fmt}'"))
    raise NotImplementedError(f"no time buckets for the {dialect} database")


async def usage_history(
    session: AsyncSession, filters: UsageFilter, granularity: Granularity
) -> list[UsageBucket]:
    """Usage per UTC hour or day over the whole range, empty buckets included.

    The first and last buckets may be partial: they hold only rows inside the range.
    Callers bound the number of buckets (``bucket_count``) before asking.
    """
    dialect = session.get_bind().dialect.name
    bucket = bucket_expression(dialect, granularity, UsageRecord.created_at).label("bucket")
    rows = (
        await session.execute(
            select(
                bucket,
                func.sum(UsageRecord.prompt_tokens),
                func.sum(UsageRecord.completion_tokens),
                func.sum(UsageRecord.total_tokens),
                usd_sum(dialect, UsageRecord.cost_usd),
                _is("llm"),
                _is("tool"),
            )
            .where(*filters.where())
            .group_by(bucket)
        )
    ).all()
    found = {
        datetime.fromisoformat(str(r[0])).replace(tzinfo=UTC): UsageBucket(
            datetime.min,
            _int(r[1]),
            _int(r[2]),
            _int(r[3]),
            usd_from_sum(dialect, r[4]),
            _int(r[5]),
            _int(r[6]),
        )
        for r in rows
    }
    buckets = []
    for start in bucket_starts(filters.start, filters.end, granularity):
        item = found.get(start) or UsageBucket(start)
        item.bucket_start = start
        buckets.append(item)
    return buckets


@dataclass(frozen=True)
class ExecutionUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


async def execution_usage(
    session: AsyncSession, execution_ids: Sequence[int]
) -> dict[int, ExecutionUsage]:
    """Each execution's usage as the ledger has it (executions without any: zeros)."""
    if not execution_ids:
        return {}
    dialect = session.get_bind().dialect.name
    rows = await session.execute(
        select(
            UsageRecord.execution_id,
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            usd_sum(dialect, UsageRecord.cost_usd),
        )
        .where(UsageRecord.execution_id.in_(execution_ids))
        .group_by(UsageRecord.execution_id)
    )
    found = {
        row[0]: ExecutionUsage(_int(row[1]), _int(row[2]), usd_from_sum(dialect, row[3]))
        for row in rows
    }
    return {i: found.get(i, ExecutionUsage()) for i in execution_ids}
