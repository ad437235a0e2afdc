"""Billing: what the usage ledger holds, summed in SQL, and monthly budgets."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, Context, Viewer
from api.errors import NotFound, Unprocessable
from api.routes.router import PrefixRouter
from api.schemas.billing import (
    AgentBreakdown,
    AgentUsageItem,
    BudgetIn,
    BudgetOut,
    HistoryBucket,
    UsageHistory,
    UsageReport,
)
from api.schemas.common import MAX_DB_ID, Envelope, error_responses, ok
from infra import ledger
from infra.dbtypes import utcnow
from infra.models import Agent, UsageRecord, Workflow

router = PrefixRouter(
    prefix="/api/v1/Billing", tags=["Billing"], responses=error_responses(404, 422)
)

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
    summary="Tokens, cost and calls over a range (SQL aggregation over the ledger)",
)
async def get_usage(filters: FiltersDep, viewer: Viewer) -> Envelope[UsageReport]:
    totals = await ledger.usage_totals(viewer.session, filters)
    return ok(UsageReport.model_validate({**_range(filters), **asdict(totals)}))


@router.get("/agent-breakdown", summary="Usage per agent, most expensive first")
async def get_agent_breakdown(filters: FiltersDep, viewer: Viewer) -> Envelope[AgentBreakdown]:
    rows = await ledger.agent_breakdown(viewer.session, filters)
    # unpriced_calls is a count here, a flag there.
    items = [AgentUsageItem(**asdict(a), unpriced=a.unpriced_calls > 0) for a in rows]
    return ok(AgentBreakdown(**_range(filters), items=items))


@router.get(
    "/usage/history",
    summary="Usage per UTC hour or day, every bucket of the range (empty ones too)",
)
async def get_usage_history(
    filters: FiltersDep,
    viewer: Viewer,
    granularity: Annotated[
        Literal["hour", "day"],
        Query(description="Bucket size; buckets are aligned to UTC hours or days."),
    ] = "day",
) -> Envelope[UsageHistory]:
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
    items = [HistoryBucket.model_validate(b) for b in buckets]
    return ok(UsageHistory(**_range(filters), granularity=granularity, items=items))


async def _budgets(ctx: Context) -> Envelope[BudgetOut]:
    return ok(BudgetOut.model_validate(await ledger.budget_report(ctx.session, ctx.workspace_id)))


@router.get("/budget", summary="Monthly budgets (workspace and per agent) with this month's spend")
async def get_budget(viewer: Viewer) -> Envelope[BudgetOut]:
    return await _budgets(viewer)


@router.put("/budget", summary="Set the workspace's or an agent's monthly budget (null removes it)")
async def put_budget(body: BudgetIn, admin: Admin) -> Envelope[BudgetOut]:
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
