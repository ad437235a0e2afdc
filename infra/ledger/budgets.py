"""Budgets: a monthly limit (calendar months, UTC) for the workspace or one agent.

``budget_block`` says why a new LLM call or execution must not start, or None. It is
a check before the call, not a reservation, so concurrent runs can overshoot a budget
by at most the LLM calls already in flight when it was crossed (each of those checked
before it started and is recorded when it answers). What has been spent is summed in
SQL from the usage records of the month.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.dbtypes import utcnow
from infra.models import Agent, Budget, UsageRecord, Workspace
from infra.usd import usd_from_sum, usd_label, usd_sum


def start_of_month(now: datetime | None = None) -> datetime:
    """00:00 UTC on the first day of the current (or ``now``'s) month."""
    moment = (now or utcnow()).astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def spent(
    session: AsyncSession,
    workspace_id: int,
    agent_id: int | None = None,
    month_start: datetime | None = None,
) -> Decimal:
    """USD recorded since ``month_start`` (default: this month) for the workspace or agent."""
    dialect = session.get_bind().dialect.name
    since = month_start or start_of_month()
    stmt = select(usd_sum(dialect, UsageRecord.cost_usd)).where(
        UsageRecord.workspace_id == workspace_id, UsageRecord.created_at >= since
    )
    if agent_id is not None:
        stmt = stmt.where(UsageRecord.agent_id == agent_id)
    return usd_from_sum(dialect, await session.scalar(stmt))


async def _spent_by_agent(
    session: AsyncSession, workspace_id: int, agent_ids: Sequence[int], since: datetime
) -> dict[int, Decimal]:
    if not agent_ids:
        return {}
    dialect = session.get_bind().dialect.name
    rows = await session.execute(
        select(UsageRecord.agent_id, usd_sum(dialect, UsageRecord.cost_usd))
        .where(
            UsageRecord.workspace_id == workspace_id,
            UsageRecord.created_at >= since,
            UsageRecord.agent_id.in_(list(agent_ids)),
        )
        .group_by(UsageRecord.agent_id)
    )
    return {int(agent_id): usd_from_sum(dialect, total) for agent_id, total in rows.all()}


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
    rows = (
        await session.execute(
            select(Budget, Agent.name)
            .outerjoin(Agent, Agent.id == Budget.agent_id)
            .where(Budget.workspace_id == workspace_id)
            .order_by(Budget.agent_id)
        )
    ).all()
    own = next((b for b, _ in rows if b.agent_id is None), None)
    per_agent = [(b, name) for b, name in rows if b.agent_id is not None]
    by_agent = await _spent_by_agent(
        session, workspace_id, [b.agent_id for b, _ in per_agent if b.agent_id], since
    )
    workspace = BudgetState(
        None,
        None,
        own.monthly_usd if own else None,
        await spent(session, workspace_id, month_start=since),
        own.updated_at if own else None,
    )
    agents = [
        BudgetState(
            b.agent_id, name, b.monthly_usd, by_agent.get(b.agent_id or 0, Decimal(0)), b.updated_at
        )
        for b, name in per_agent
    ]
    return BudgetReport(since, workspace, agents)


async def set_budget(
    session: AsyncSession, workspace_id: int, agent_id: int | None, monthly_usd: Decimal | None
) -> None:
    """Set (or with None remove) a monthly budget. Does not commit."""
    # Take the workspace row's write lock first: budget writers of one workspace run one
    # at a time, so the workspace budget (null agent_id, which a unique index does not
    # compare) stays a single row. A write is the first statement, so SQLite takes its
    # write lock here too instead of failing a read-to-write upgrade later.
    await session.execute(
        update(Workspace).where(Workspace.id == workspace_id).values(name=Workspace.name)
    )
    which = Budget.agent_id.is_(None) if agent_id is None else Budget.agent_id == agent_id
    # A locking read: on MySQL a plain read would answer from the snapshot that the
    # request's first query (the caller's credential) opened, missing a concurrent insert.
    existing = await session.scalar(
        select(Budget).where(Budget.workspace_id == workspace_id, which).with_for_update()
    )
    if monthly_usd is None:
        if existing is not None:
            await session.delete(existing)
    elif existing is not None:
        existing.monthly_usd = monthly_usd
        existing.updated_at = utcnow()
    else:
        session.add(
            Budget(
                workspace_id=workspace_id,
                agent_id=agent_id,
                monthly_usd=monthly_usd,
                updated_at=utcnow(),
            )
        )


# The budgets that apply to a call or a run: the workspace's and those of the agents it
# uses. Built once, with the agents as an expanding parameter: a model call checks it
# every time, and in the chain profile ``budget_block`` was 9% of the worker's samples,
# building its conditions (``BooleanClauseList._construct``) 4% alone.
_BUDGETS_IN_SCOPE = (
    select(Budget.agent_id, Budget.monthly_usd, Agent.name)
    .outerjoin(Agent, Agent.id == Budget.agent_id)
    .where(
        Budget.workspace_id == bindparam("workspace_id"),
        or_(Budget.agent_id.is_(None), Budget.agent_id.in_(bindparam("agent_ids", expanding=True))),
    )
)


# A budget that applies: (the agent it limits, None for the workspace's; its monthly
# USD; that agent's name).
BudgetInScope = tuple[int | None, Decimal, str | None]


async def budgets_in_scope(
    session: AsyncSession, workspace_id: int, agent_ids: Sequence[int]
) -> list[BudgetInScope]:
    """The budgets set for the workspace and for any of ``agent_ids``: one small query."""
    parameters = {"workspace_id": workspace_id, "agent_ids": list(agent_ids)}
    rows = (await session.execute(_BUDGETS_IN_SCOPE, parameters)).all()
    return [(agent_id, limit, name) for agent_id, limit, name in rows]


async def first_exhausted(
    session: AsyncSession,
    workspace_id: int,
    agent_ids: Sequence[int],
    budgets: Sequence[BudgetInScope],
) -> str | None:
    """Why nothing more may be spent under ``budgets`` (``budgets_in_scope``'s) this
    month, or None. Sums this month's usage only when a budget is set."""
    if not budgets:  # the usual case: no budget, no sums
        return None
    since = start_of_month()
    month = f"since {since:%Y-%m-%d} (UTC)"
    for agent_id, limit, _ in budgets:
        if agent_id is None:
            used = await spent(session, workspace_id, month_start=since)
            if used >= limit:
                return (
                    f"the workspace's monthly budget of {usd_label(limit)} is exhausted: "
                    f"{usd_label(used)} spent {month}; raise it with PUT "
                    "/api/v1/Billing/budget or wait for the next month"
                )
    limits = {int(a): (limit, name) for a, limit, name in budgets if a is not None}
    by_agent = await _spent_by_agent(session, workspace_id, sorted(limits), since)
    for agent_id in agent_ids:
        if agent_id in limits:
            limit, name = limits[agent_id]
            used = by_agent.get(agent_id, Decimal(0))
            if used >= limit:
                return (
                    f"agent {agent_id} ({name!r}) has exhausted its monthly budget of "
                    f"{usd_label(limit)}: {usd_label(used)} spent {month}; raise it with PUT "
                    f"/api/v1/Billing/budget (agent_id {agent_id}) or wait for the "
                    "next month"
                )
    return None


async def _first_exhausted(
    session: AsyncSession, workspace_id: int, agent_ids: Sequence[int]
) -> str | None:
    budgets = await budgets_in_scope(session, workspace_id, agent_ids)
    return await first_exhausted(session, workspace_id, agent_ids, budgets)


async def budget_block(
    session: AsyncSession, workspace_id: int, agent_id: int | None = None
) -> str | None:
    """Why a new LLM call (by ``agent_id``) must not start: the workspace's or the agent's
    monthly budget is exhausted. None when it may start. Costs one small query when no
    budget is set; one or two sums over this month's rows when one is."""
    return await _first_exhausted(session, workspace_id, [] if agent_id is None else [agent_id])


async def execution_budget_block(
    session: AsyncSession, workspace_id: int, agent_ids: Collection[int]
) -> str | None:
    """``budget_block`` for a new execution: the workspace budget, and the budget of each
    agent (``agent_ids``) its pinned workflow version uses."""
    return await _first_exhausted(session, workspace_id, sorted(agent_ids))
