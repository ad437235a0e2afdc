"""Billing: what the usage ledger holds, summed in SQL, and monthly budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, Context, Viewer
from api.errors import NotFound, Unprocessable
from api.schemas.billing import (
    AgentBreakdown,
    AgentUsageItem,
    BudgetIn,
    BudgetLine,
    BudgetOut,
    HistoryBucket,
    UsageHistory,
    UsageReport,
)
from api.schemas.common import MAX_DB_ID, Envelope, error_responses, ok
from infra import ledger
from infra.dbtypes import utcnow
from infra.models import Agent, UsageRecord, Workflow
from infra.usd import usd_text

router = APIRouter(prefix="/api/v1/Billing", tags=["Billing"], responses=error_responses(404, 422))

DEFAULT_RANGE = timedelta(days=30)

TIME_HELP = (
    "ISO 8601 date or date-time (2025-06-01, 2025-06-01T12:00:00Z, "
    "2025-06-01T14:00:00%2B02:00); without an offset it is UTC."
)


def _bad(name: str, msg: str, kind: str = "value_error") -> Unprocessable:
    return Unprocessable(
        f"invalid {name}: {msg}", [{"loc": ["query", name], "msg": msg, "type": kind}]
    )


def _parse(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _instant(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    text = raw.strip()
    value = _parse(text)
    head, space, tail = text.rpartition(" ")
    if value is None and space and head:
        value = _parse(f"{head}+{tail}")  # "+02:00" not percent-encoded arrives as " 02:00"
    if value is None:
        raise _bad(
            name,
            f"{raw!r} is not an ISO 8601 date or date-time, e.g. 2025-06-01T00:00:00Z",
            "datetime_parsing",
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _bad(name, f"{raw!r} is out of range in UTC") from None


async def _named_here(
    viewer: Context, model: type[Agent | Workflow], column: Any, item_id: int
) -> bool:
    """Whether an id names this workspace's object, or one whose usage this workspace kept
    (a deleted agent or workflow): other workspaces' ids are 404, as elsewhere."""
    mine = model.id == item_id, model.workspace_id == viewer.workspace_id
    if await viewer.session.scalar(select(model.id).where(*mine)):
        return True
    kept = column == item_id, UsageRecord.workspace_id == viewer.workspace_id
    return await viewer.session.scalar(select(UsageRecord.id).where(*kept).limit(1)) is not None


async def _filters(
    viewer: Viewer,
    start: Annotated[
        str | None,
        Query(description="Range start, inclusive. " + TIME_HELP + " Default: 30 days before end."),
    ] = None,
    end: Annotated[
        str | None, Query(description="Range end, exclusive. " + TIME_HELP + " Default: now.")
    ] = None,
    agent_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="Only this agent's usage.")
    ] = None,
    workflow_id: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="Only this workflow's usage.")
    ] = None,
) -> ledger.UsageFilter:
    """start/end (default: the last 30 days, end now), agent_id, workflow_id: each
    agent or workflow named must be this workspace's (404 otherwise)."""
    given_start, given_end = _instant(start, "start"), _instant(end, "end")
    end_at = given_end or utcnow()
    try:
        start_at = given_start or end_at - DEFAULT_RANGE
    except OverflowError:
        raise _bad("end", "too early to reach 30 days back; give start as well") from None
    if end_at <= start_at:
        said = "" if given_end else " (end defaults to now)"
        raise _bad(
            "end",
            f"end ({end_at.isoformat()}) must be after start ({start_at.isoformat()}){said}",
            "range",
        )
    for label, model, column, item_id in (
        ("agent", Agent, UsageRecord.agent_id, agent_id),
        ("workflow", Workflow, UsageRecord.workflow_id, workflow_id),
    ):
        if item_id is not None and not await _named_here(viewer, model, column, item_id):
            raise NotFound(f"{label} {item_id} does not exist")
    return ledger.UsageFilter(viewer.workspace_id, start_at, end_at, agent_id, workflow_id)


FiltersDep = Annotated[ledger.UsageFilter, Depends(_filters)]


def _range(filters: ledger.UsageFilter) -> dict[str, datetime]:
    return {"start": filters.start, "end": filters.end}


@router.get(
    "/usage",
    response_model=Envelope[UsageReport],
    summary="Tokens, cost and calls over a range (SQL aggregation over the ledger)",
)
async def get_usage(filters: FiltersDep, viewer: Viewer) -> dict[str, Any]:
    totals = await ledger.usage_totals(viewer.session, filters)
    return ok(
        UsageReport(
            **_range(filters),
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            total_tokens=totals.total_tokens,
            cost_usd=usd_text(totals.cost_usd),
            llm_calls=totals.llm_calls,
            tool_calls=totals.tool_calls,
            executions=totals.executions,
            unpriced_calls=totals.unpriced_calls,
        )
    )


@router.get(
    "/agent-breakdown",
    response_model=Envelope[AgentBreakdown],
    summary="Usage per agent, most expensive first",
)
async def get_agent_breakdown(filters: FiltersDep, viewer: Viewer) -> dict[str, Any]:
    items = [
        AgentUsageItem(
            agent_id=a.agent_id,
            agent_name=a.agent_name,
            prompt_tokens=a.prompt_tokens,
            completion_tokens=a.completion_tokens,
            total_tokens=a.total_tokens,
            cost_usd=usd_text(a.cost_usd),
            llm_calls=a.llm_calls,
            tool_calls=a.tool_calls,
            unpriced=a.unpriced_calls > 0,
            unpriced_models=a.unpriced_models,
        )
        for a in await ledger.agent_breakdown(viewer.session, filters)
    ]
    return ok(AgentBreakdown(**_range(filters), items=items))


@router.get(
    "/usage/history",
    response_model=Envelope[UsageHistory],
    summary="Usage per UTC hour or day, every bucket of the range (empty ones too)",
)
async def get_usage_history(
    filters: FiltersDep,
    viewer: Viewer,
    granularity: Annotated[
        Literal["hour", "day"],
        Query(description="Bucket size; buckets are aligned to UTC hours or days."),
    ] = "day",
) -> dict[str, Any]:
    count = ledger.bucket_count(filters.start, filters.end, granularity)
    if count > ledger.MAX_BUCKETS:
        raise _bad(
            "granularity",
            f"the range holds {count} {granularity}s; at most "
            f"{ledger.MAX_BUCKETS} buckets are returned: shorten the range or use "
            "granularity=day",
            "too_many_buckets",
        )
    buckets = await ledger.usage_history(viewer.session, filters, granularity)
    items = [
        HistoryBucket(
            bucket_start=b.bucket_start,
            prompt_tokens=b.prompt_tokens,
            completion_tokens=b.completion_tokens,
            total_tokens=b.total_tokens,
            cost_usd=usd_text(b.cost_usd),
            llm_calls=b.llm_calls,
            tool_calls=b.tool_calls,
        )
        for b in buckets
    ]
    return ok(UsageHistory(**_range(filters), granularity=granularity, items=items))


def _line(state: ledger.BudgetState) -> BudgetLine:
    remaining = state.remaining_usd
    return BudgetLine(
        agent_id=state.agent_id,
        agent_name=state.agent_name,
        monthly_usd=None if state.monthly_usd is None else usd_text(state.monthly_usd),
        spent_usd=usd_text(state.spent_usd),
        remaining_usd=None if remaining is None else usd_text(remaining),
        exhausted=state.exhausted,
        updated_at=state.updated_at,
    )


async def _budgets(ctx: Context) -> dict[str, Any]:
    report = await ledger.budget_report(ctx.session, ctx.workspace_id)
    return ok(
        BudgetOut(
            month_start=report.month_start,
            workspace=_line(report.workspace),
            agents=[_line(a) for a in report.agents],
        )
    )


@router.get(
    "/budget",
    response_model=Envelope[BudgetOut],
    summary="Monthly budgets (workspace and per agent) with this month's spend",
)
async def get_budget(viewer: Viewer) -> dict[str, Any]:
    return await _budgets(viewer)


@router.put(
    "/budget",
    response_model=Envelope[BudgetOut],
    summary="Set the workspace's or an agent's monthly budget (null removes it)",
)
async def put_budget(body: BudgetIn, admin: Admin) -> dict[str, Any]:
    session, workspace_id = admin.session, admin.workspace_id
    if (
        body.agent_id is not None
        and await session.scalar(
            select(Agent.id).where(Agent.id == body.agent_id, Agent.workspace_id == workspace_id)
        )
        is None
    ):
        raise Unprocessable(
            f"agent {body.agent_id} does not exist",
            [{"loc": ["body", "agent_id"], "msg": "no such agent", "type": "unknown_agent"}],
        )
    await ledger.set_budget(session, workspace_id, body.agent_id, body.monthly_usd)
    try:
        await session.commit()
    except IntegrityError as exc:  # the agent was deleted meanwhile
        await session.rollback()
        raise Unprocessable(f"agent {body.agent_id} does not exist") from exc
    return await _budgets(admin)
