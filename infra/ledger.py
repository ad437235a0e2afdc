"""The usage ledger: one priced row per LLM call and per tool call, written exactly once.

Writing
-------
``record_llm_call`` and ``record_tool_call`` insert one ``usage_records`` row keyed by
``usage_key(...)``. The key is unique in the database, so recording the same call
twice (a retried recording, a replayed activity, two processes racing) leaves one
row: the second call returns None and changes nothing. They do not commit; the
caller's transaction decides (commit right after, so the row is durable before the
activity reports success).

The key carries the Temporal *activity attempt*. A retry of an LLM activity really
calls the model again and the provider charges again, so it must be counted: the new
attempt number makes a new key. What must not be counted twice is the *same* attempt
recorded again, e.g. a recording retried after a lost commit acknowledgement, and
that has the same key. A worker killed after the model answered but before the row
was committed loses that one row (the provider charged, the ledger never heard): the
ledger counts calls it saw answered, never more than were made.

Reading
-------
Reports (``usage_totals``, ``agent_breakdown``, ``usage_history``), ``spent`` and
budgets aggregate in SQL (SUM/COUNT/GROUP BY); no usage row is loaded into Python.
Money is exact on both databases: MySQL/MariaDB sum DECIMAL columns exactly; SQLite
stores NUMERIC as REAL, so there each row's cost is turned into an integer count of
1e-10 USD (exact for any per-row cost below ~$900,000) and the integers are summed.
Time buckets are UTC hours or days.

Budgets
-------
A budget is a monthly limit (calendar months, UTC) for the workspace or one agent.
``budget_block`` says why a new LLM call or execution must not start, or None. It is
a check before the call, not a reservation, so concurrent runs can overshoot a budget
by at most the LLM calls already in flight when it was crossed (each of those checked
before it started and is recorded when it answers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Table,
    and_,
    distinct,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from infra.dbtypes import utcnow
from infra.models import (
    Agent,
    Budget,
    UsageRecord,
    WorkflowVersion,
    WorkflowVersionRef,
    Workspace,
)
from infra.pricing import Pricing, Tokens

Kind = Literal["llm", "tool"]
Granularity = Literal["hour", "day"]

MAX_KEY_LENGTH = 255  # usage_records.idempotency_key
MONEY_PLACES = 10  # usage_records.cost_usd is NUMERIC(20, 10)
_MONEY_UNITS = 10**MONEY_PLACES
MYSQL_DUPLICATE_KEY = 1062
# MySQL DATETIME holds years 1000..9999; a range asked beyond that is clamped.
DB_MIN_TIME = datetime(1000, 1, 1, tzinfo=UTC)
DB_MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
STEPS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 10_000  # ~416 days of hours, ~27 years of days


# -- writing ---------------------------------------------------------------------------------

def usage_key(execution_id: int, node_id: str, attempt: int, call_index: int | str, *,
              kind: Kind = "llm", visit: int = 1) -> str:
    """The idempotency key of one call: ``llm:<execution>:<node>:<visit>:<call>:<attempt>``.

    ``call_index`` names the call within one visit of the node: an agent's model calls
    are 0, 1, 2...; a tool call the model asked for in model call 2 can be ``"2.0"``,
    ``"2.1"``; a tool node's call is 0. ``visit`` counts how often the node ran in this
    execution (a node inside a bounded loop runs again, and its calls are new calls).
    ``attempt`` is ``activity.info().attempt``: see the module docs for why it is here.
    """
    if attempt < 1 or visit < 1:
        raise ValueError("attempt and visit count from 1")
    key = f"{kind}:{execution_id}:{node_id}:{visit}:{call_index}:{attempt}"
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"usage key longer than {MAX_KEY_LENGTH} characters: {key[:80]}...")
    return key


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


async def record_llm_call(
    session: AsyncSession, *, key: str, workspace_id: int, execution_id: int | None,
    workflow_id: int | None, agent_id: int | None, node_id: str | None, provider: str,
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
    reasoning_tokens: int = 0, latency_ms: float | None = None, pricing: Pricing,
    at: datetime | None = None,
) -> UsageRecord | None:
    """Price one answered model call and add it to the ledger, once.

    Token counts are as the provider reports them (OpenAI convention): ``cached_tokens``
    is the part of ``prompt_tokens`` served from cache, ``reasoning_tokens`` the part
    of ``completion_tokens`` spent reasoning. Returns the row written (with
    ``cost_usd``, the unit prices and ``unpriced``), or None when ``key`` was already
    recorded. ``at`` is when the call happened (default now). Does not commit.
    """
    tokens = Tokens(_count(prompt_tokens, "prompt_tokens"),
                    _count(completion_tokens, "completion_tokens"),
                    _count(cached_tokens, "cached_tokens"))
    _count(reasoning_tokens, "reasoning_tokens")
    cost = pricing.cost(tokens, model)
    values: dict[str, Any] = {
        "workspace_id": workspace_id, "execution_id": execution_id,
        "workflow_id": workflow_id, "agent_id": agent_id, "node_id": node_id, "kind": "llm",
        "provider": provider, "model": model, "tool_name": None,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens, "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "input_usd_per_mtok": cost.price.input, "output_usd_per_mtok": cost.price.output,
        "cost_usd": cost.cost_usd, "unpriced": cost.unpriced, "latency_ms": latency_ms,
        "ok": True, "idempotency_key": key, "created_at": at or utcnow(),
    }
    return await _insert_once(session, values)


async def record_tool_call(
    session: AsyncSession, *, key: str, workspace_id: int, execution_id: int | None,
    workflow_id: int | None, agent_id: int | None, node_id: str | None, tool_name: str,
    ok: bool, latency_ms: float | None, at: datetime | None = None,
) -> UsageRecord | None:
    """Add one tool call (an attempt that reached the tool) to the ledger, once.

    ``agent_id`` is the agent that asked for the call, None for a tool node. Tool
    calls cost nothing in the ledger; they are counted. Returns None for a key already
    recorded. Does not commit.
    """
    values: dict[str, Any] = {
        "workspace_id": workspace_id, "execution_id": execution_id,
        "workflow_id": workflow_id, "agent_id": agent_id, "node_id": node_id, "kind": "tool",
        "provider": None, "model": None, "tool_name": tool_name,
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0,
        "reasoning_tokens": 0, "input_usd_per_mtok": Decimal(0),
        "output_usd_per_mtok": Decimal(0), "cost_usd": Decimal(0), "unpriced": False,
        "latency_ms": latency_ms, "ok": ok, "idempotency_key": key,
        "created_at": at or utcnow(),
    }
    return await _insert_once(session, values)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _is_duplicate(exc: IntegrityError) -> bool:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return bool(args) and args[0] == MYSQL_DUPLICATE_KEY


async def _insert_once(session: AsyncSession, values: dict[str, Any]) -> UsageRecord | None:
    table = cast(Table, UsageRecord.__table__)
    if _dialect(session) == "sqlite":
        # SAVEPOINTs are unreliable on pysqlite; SQLite has INSERT ... ON CONFLICT.
        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing(
            index_elements=["idempotency_key"])
        result: CursorResult[Any] = await session.execute(stmt)  # type: ignore[assignment]
        if result.rowcount == 0:
            return None
    else:
        # MySQL has no ON CONFLICT, and INSERT IGNORE would also turn other errors into
        # warnings; a SAVEPOINT keeps the caller's transaction intact on a duplicate.
        try:
            async with session.begin_nested():
                result = await session.execute(  # type: ignore[assignment]
                    insert(table).values(**values))
        except IntegrityError as exc:
            if _is_duplicate(exc):
                return None
            raise
    key = result.inserted_primary_key
    assert key is not None
    return UsageRecord(id=key[0], **values)


# -- money in SQL ----------------------------------------------------------------------------

def _money_sum(dialect: str, column: Any) -> ColumnElement[Any]:
    """SUM of a NUMERIC(20, 10) column, exactly (read it back with ``_money``)."""
    if dialect == "sqlite":
        return func.sum(sql_cast(func.round(column * _MONEY_UNITS), BigInteger))
    return func.sum(column)


def _money(dialect: str, value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if dialect == "sqlite":
        return Decimal(int(value)).scaleb(-MONEY_PLACES)
    return Decimal(value)


def _int(value: Any) -> int:
    return int(value or 0)  # MySQL sums integers as DECIMAL


# -- reports ---------------------------------------------------------------------------------

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
    dialect = _dialect(session)
    row = (await session.execute(
        select(
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.total_tokens),
            _money_sum(dialect, UsageRecord.cost_usd),
            _is("llm"),
            _is("tool"),
            func.count(distinct(UsageRecord.execution_id)),
            _unpriced_calls(),
        ).where(*filters.where())
    )).one()
    return UsageTotals(_int(row[0]), _int(row[1]), _int(row[2]), _money(dialect, row[3]),
                       _int(row[4]), _int(row[5]), _int(row[6]), _int(row[7]))


async def agent_breakdown(session: AsyncSession, filters: UsageFilter) -> list[AgentUsage]:
    """Usage per agent (rows that name an agent), most expensive first."""
    dialect = _dialect(session)
    # SQLite, given ANALYZE statistics, would walk the (agent_id, created_at) index to
    # group without sorting, then fetch every row at random: 2-10x slower than reading
    # the time range through the covering index and sorting. "+agent_id" hides it.
    group: Any = (literal_column(f"+{UsageRecord.__tablename__}.agent_id")
                  if dialect == "sqlite" else UsageRecord.agent_id)
    cost = _money_sum(dialect, UsageRecord.cost_usd).label("cost")
    total = func.sum(UsageRecord.total_tokens).label("total")
    grouped = (
        select(
            UsageRecord.agent_id.label("agent_id"),
            func.sum(UsageRecord.prompt_tokens).label("prompt"),
            func.sum(UsageRecord.completion_tokens).label("completion"),
            total, cost,
            _is("llm").label("llm_calls"),
            _is("tool").label("tool_calls"),
            _unpriced_calls().label("unpriced_calls"),
        )
        .where(*filters.where(), UsageRecord.agent_id.is_not(None))
        .group_by(group)
        .subquery()
    )
    rows = (await session.execute(
        select(grouped, Agent.name)
        .outerjoin(Agent, Agent.id == grouped.c.agent_id)
        .order_by(grouped.c.cost.desc(), grouped.c.total.desc(), grouped.c.agent_id)
    )).all()
    items = [
        AgentUsage(_int(r.agent_id), r.name, _int(r.prompt), _int(r.completion), _int(r.total),
                   _money(dialect, r.cost), _int(r.llm_calls), _int(r.tool_calls),
                   _int(r.unpriced_calls))
        for r in rows
    ]
    flagged = {i.agent_id: i for i in items if i.unpriced_calls}
    if flagged:  # name the models, found through the (workspace, unpriced, time) index
        for agent_id, model in (await session.execute(
            select(UsageRecord.agent_id, UsageRecord.model)
            .where(*filters.where(), UsageRecord.agent_id.is_not(None),
                   # "= true", not "IS TRUE": only the former can use an index on MySQL
                   UsageRecord.unpriced == True)  # noqa: E712
            .group_by(group, UsageRecord.model)
            .order_by(UsageRecord.model)
        )).all():
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


def bucket_expression(dialect: str, granularity: Granularity, column: Any
                      ) -> ColumnElement[Any]:
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


async def usage_history(session: AsyncSession, filters: UsageFilter,
                        granularity: Granularity) -> list[UsageBucket]:
    """Usage per UTC hour or day over the whole range, empty buckets included.

    The first and last buckets may be partial: they hold only rows inside the range.
    Callers bound the number of buckets (``bucket_count``) before asking.
    """
    dialect = _dialect(session)
    bucket = bucket_expression(dialect, granularity, UsageRecord.created_at).label("bucket")
    rows = (await session.execute(
        select(
            bucket,
            func.sum(UsageRecord.prompt_tokens),
            func.sum(UsageRecord.completion_tokens),
            func.sum(UsageRecord.total_tokens),
            _money_sum(dialect, UsageRecord.cost_usd),
            _is("llm"),
            _is("tool"),
        ).where(*filters.where()).group_by(bucket)
    )).all()
    found = {
        datetime.fromisoformat(str(r[0])).replace(tzinfo=UTC):
            UsageBucket(datetime.min, _int(r[1]), _int(r[2]), _int(r[3]), _money(dialect, r[4]),
                        _int(r[5]), _int(r[6]))
        for r in rows
    }
    buckets = []
    for start in bucket_starts(filters.start, filters.end, granularity):
        item = found.get(start) or UsageBucket(start)
        item.bucket_start = start
        buckets.append(item)
    return buckets


# -- budgets ---------------------------------------------------------------------------------

def start_of_month(now: datetime | None = None) -> datetime:
    """00:00 UTC on the first day of the current (or ``now``'s) month."""
    moment = (now or utcnow()).astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def spent(session: AsyncSession, workspace_id: int, agent_id: int | None = None,
                month_start: datetime | None = None) -> Decimal:
    """USD recorded since ``month_start`` (default: this month) for the workspace or agent."""
    dialect = _dialect(session)
    since = month_start or start_of_month()
    stmt = select(_money_sum(dialect, UsageRecord.cost_usd)).where(
        UsageRecord.workspace_id == workspace_id, UsageRecord.created_at >= since)
    if agent_id is not None:
        stmt = stmt.where(UsageRecord.agent_id == agent_id)
    return _money(dialect, await session.scalar(stmt))


async def _spent_by_agent(session: AsyncSession, workspace_id: int, agent_ids: Sequence[int],
                          since: datetime) -> dict[int, Decimal]:
    if not agent_ids:
        return {}
    dialect = _dialect(session)
    rows = await session.execute(
        select(UsageRecord.agent_id, _money_sum(dialect, UsageRecord.cost_usd))
        .where(UsageRecord.workspace_id == workspace_id, UsageRecord.created_at >= since,
               UsageRecord.agent_id.in_(list(agent_ids)))
        .group_by(UsageRecord.agent_id))
    return {int(agent_id): _money(dialect, total) for agent_id, total in rows.all()}


@dataclass
class BudgetState:
    """A budget with what has been spent against it this month."""

    agent_id: int | None
    agent_name: str | None
    monthly_usd: Decimal | None  # None: no budget set (only for the workspace)
    spent_usd: Decimal
    updated_at: datetime | None

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.monthly_usd is None:
            return None
        return max(Decimal(0), self.monthly_usd - self.spent_usd)

    @property
    def exhausted(self) -> bool:
        return self.monthly_usd is not None and self.spent_usd >= self.monthly_usd


@dataclass
class BudgetReport:
    month_start: datetime
    workspace: BudgetState
    agents: list[BudgetState]


async def budget_report(session: AsyncSession, workspace_id: int) -> BudgetReport:
    """The workspace budget and every agent budget, with this month's spend."""
    since = start_of_month()
    rows = (await session.execute(
        select(Budget, Agent.name).outerjoin(Agent, Agent.id == Budget.agent_id)
        .where(Budget.workspace_id == workspace_id).order_by(Budget.agent_id)
    )).all()
    own = next((b for b, _ in rows if b.agent_id is None), None)
    per_agent = [(b, name) for b, name in rows if b.agent_id is not None]
    by_agent = await _spent_by_agent(session, workspace_id,
                                     [b.agent_id for b, _ in per_agent if b.agent_id], since)
    workspace = BudgetState(None, None, own.monthly_usd if own else None,
                            await spent(session, workspace_id, month_start=since),
                            own.updated_at if own else None)
    agents = [BudgetState(b.agent_id, name, b.monthly_usd,
                          by_agent.get(b.agent_id or 0, Decimal(0)), b.updated_at)
              for b, name in per_agent]
    return BudgetReport(since, workspace, agents)


async def set_budget(session: AsyncSession, workspace_id: int, agent_id: int | None,
                     monthly_usd: Decimal | None) -> None:
    """Set (or with None remove) a monthly budget. Does not commit."""
    # Take the workspace row's write lock first: budget writers of one workspace run one
    # at a time, so the workspace budget (null agent_id, which a unique index does not
    # compare) stays a single row. A write is the first statement, so SQLite takes its
    # write lock here too instead of failing a read-to-write upgrade later.
    await session.execute(update(Workspace).where(Workspace.id == workspace_id)
                          .values(name=Workspace.name))
    which = Budget.agent_id.is_(None) if agent_id is None else Budget.agent_id == agent_id
    existing = await session.scalar(
        select(Budget).where(Budget.workspace_id == workspace_id, which))
    if monthly_usd is None:
        if existing is not None:
            await session.delete(existing)
    elif existing is not None:
        existing.monthly_usd = monthly_usd
        existing.updated_at = utcnow()
    else:
        session.add(Budget(workspace_id=workspace_id, agent_id=agent_id,
                           monthly_usd=monthly_usd, updated_at=utcnow()))


MONEY_TEXT_QUANTUM = Decimal("0.000001")


def money(amount: Decimal) -> str:
    """Money as the API shows it: USD with six decimals, as text ("0.001250")."""
    return f"{amount.quantize(MONEY_TEXT_QUANTUM):f}"


def usd(amount: Decimal) -> str:
    """``$5.00``, ``$0.0042``: cents at least, up to the micro-dollars reports show."""
    text = f"{amount.quantize(Decimal('0.000001')):f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


async def _first_exhausted(session: AsyncSession, workspace_id: int,
                           agent_ids: Sequence[int]) -> str | None:
    scope: ColumnElement[bool] = Budget.agent_id.is_(None)
    if agent_ids:
        scope = or_(scope, Budget.agent_id.in_(list(agent_ids)))
    rows = (await session.execute(
        select(Budget.agent_id, Budget.monthly_usd, Agent.name)
        .outerjoin(Agent, Agent.id == Budget.agent_id)
        .where(and_(Budget.workspace_id == workspace_id, scope))
    )).all()
    if not rows:  # the usual case: no budget, no sums
        return None
    since = start_of_month()
    month = f"since {since:%Y-%m-%d} (UTC)"
    for agent_id, limit, _ in rows:
        if agent_id is None:
            used = await spent(session, workspace_id, month_start=since)
            if used >= limit:
                return (f"the workspace's monthly budget of {usd(limit)} is exhausted: "
                        f"{usd(used)} spent {month}; raise it with PUT "
                        "/api/v1/Billing/budget or wait for the next month")
    limits = {int(a): (limit, name) for a, limit, name in rows if a is not None}
    by_agent = await _spent_by_agent(session, workspace_id, sorted(limits), since)
    for agent_id in agent_ids:
        if agent_id in limits:
            limit, name = limits[agent_id]
            used = by_agent.get(agent_id, Decimal(0))
            if used >= limit:
                return (f"agent {agent_id} ({name!r}) has exhausted its monthly budget of "
                        f"{usd(limit)}: {usd(used)} spent {month}; raise it with PUT "
                        f"/api/v1/Billing/budget (agent_id {agent_id}) or wait for the "
                        "next month")
    return None


async def budget_block(session: AsyncSession, workspace_id: int,
                       agent_id: int | None = None) -> str | None:
    """Why a new LLM call (by ``agent_id``) must not start: the workspace's or the agent's
    monthly budget is exhausted. None when it may start. Costs one small query when no
    budget is set; one or two sums over this month's rows when one is."""
    return await _first_exhausted(session, workspace_id,
                                  [] if agent_id is None else [agent_id])


async def execution_budget_block(session: AsyncSession, workspace_id: int, workflow_id: int,
                                 version: int) -> str | None:
    """``budget_block`` for a new execution: the workspace budget, and the budget of each
    agent the pinned workflow version uses."""
    agent_ids = list(await session.scalars(
        select(WorkflowVersionRef.ref_id)
        .join(WorkflowVersion, WorkflowVersion.id == WorkflowVersionRef.workflow_version_id)
        .where(WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version,
               WorkflowVersionRef.ref_type == "agent")
        .order_by(WorkflowVersionRef.ref_id)))
    return await _first_exhausted(session, workspace_id, agent_ids)


@dataclass(frozen=True)
class ExecutionUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


async def execution_usage(session: AsyncSession, execution_ids: Sequence[int]
                          ) -> dict[int, ExecutionUsage]:
    """Each execution's usage as the ledger has it (executions without any: zeros)."""
    if not execution_ids:
        return {}
    dialect = _dialect(session)
    rows = await session.execute(
        select(UsageRecord.execution_id, func.sum(UsageRecord.prompt_tokens),
               func.sum(UsageRecord.completion_tokens),
               _money_sum(dialect, UsageRecord.cost_usd))
        .where(UsageRecord.execution_id.in_(execution_ids))
        .group_by(UsageRecord.execution_id)
    )
    found = {row[0]: ExecutionUsage(_int(row[1]), _int(row[2]), _money(dialect, row[3]))
             for row in rows}
    return {i: found.get(i, ExecutionUsage()) for i in execution_ids}
