"""Billing: what the usage ledger holds, summed in SQL, and monthly budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.deps import AdminWorkspaceDep, SessionDep, ViewerWorkspaceDep
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


class Filters:
    """start/end (default: the last 30 days, end now), agent_id, workflow_id."""

    def __init__(
        self,
        workspace_id: ViewerWorkspaceDep,
        start: Annotated[
            str | None,
            Query(
                description="Range start, inclusive. " + TIME_HELP + " Default: 30 days before end."
            ),
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
    ) -> None:
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
        self.value = ledger.UsageFilter(workspace_id, start_at, end_at, agent_id, workflow_id)


async def _named_here(
    session: SessionDep, workspace_id: int, model: type[Agent | Workflow], column: Any, item_id: int
) -> bool:
    """Whether an id names this workspace's object, or one whose usage this workspace kept
    (a deleted agent or workflow): other workspaces' ids are 404, as elsewhere."""
    if await session.scalar(
        select(model.id).where(model.id == item_id, model.workspace_id == workspace_id)
    ):
        return True
    return (
        await session.scalar(
            select(UsageRecord.id)
            .where(column == item_id, UsageRecord.workspace_id == workspace_id)
            .limit(1)
        )
        is not None
    )


async def _scoped(filters: Annotated[Filters, Depends()], session: SessionDep) -> Filters:
    f = filters.value
    if f.agent_id is not None and not await _named_here(
        session, f.workspace_id, Agent, UsageRecord.agent_id, f.agent_id
    ):
        raise NotFound(f"agent {f.agent_id} does not exist")
    if f.workflow_id is not None and not await _named_here(
        session, f.workspace_id, Workflow, UsageRecord.workflow_id, f.workflow_id
    ):
        raise NotFound(f"workflow {f.workflow_id} does not exist")
    return filters


FiltersDep = Annotated[Filters, Depends(_scoped)]


def _range(filters: ledger.UsageFilter) -> dict[str, datetime]:
    return {"start": filters.start, "end": filters.end}


@router.get(
    "/usage",
    response_model=Envelope[UsageReport],
    summary="Tokens, cost and calls over a range (SQL aggregation over the ledger)",
)
async def get_usage(session: SessionDep, filters: FiltersDep) -> dict[str, Any]:
    f = filters.value
    totals = await ledger.usage_totals(session, f)
    return ok(
        UsageReport(
            **_range(f),
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
            total_tokens=totals.total_tokens,
            cost_usd=usd_text(totals.cost_usd),
            llm_calls=totals.llm_calls,
            tool_calls=totals.tool_calls,
            executions=totals.executions,
            unpriced_calls=totals.unpriced_calls,
        ).model_dump(mode="json")
    )


@router.get(
    "/agent-breakdown",
    response_model=Envelope[AgentBreakdown],
    summary="Usage per agent, most expensive first",
)
async def get_agent_breakdown(session: SessionDep, filters: FiltersDep) -> dict[str, Any]:
    f = filters.value
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
        for a in await ledger.agent_breakdown(session, f)
    ]
    return ok(AgentBreakdown(**_range(f), items=items).model_dump(mode="json"))


@router.get(
    "/usage/history",
    response_model=Envelope[UsageHistory],
    summary="Usage per UTC hour or day, every bucket of the range (empty ones too)",
)
async def get_usage_history(
    session: SessionDep,
    filters: FiltersDep,
    granularity: Annotated[
        Literal["hour", "day"],
        Query(description="Bucket size; buckets are aligned to UTC hours or days."),
    ] = "day",
) -> dict[str, Any]:
    f = filters.value
    count = ledger.bucket_count(f.start, f.end, granularity)
    if count > ledger.MAX_BUCKETS:
        raise _bad(
            "granularity",
            f"the range holds {count} {granularity}s; at most "
            f"{ledger.MAX_BUCKETS} buckets are returned: shorten the range or use "
            "granularity=day",
            "too_many_buckets",
        )
    buckets = await ledger.usage_history(session, f, granularity)
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
    return ok(
        UsageHistory(**_range(f), granularity=granularity, items=items).model_dump(mode="json")
    )


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


async def _budgets(session: SessionDep, workspace_id: int) -> dict[str, Any]:
    report = await ledger.budget_report(session, workspace_id)
    return BudgetOut(
        month_start=report.month_start,
        workspace=_line(report.workspace),
        agents=[_line(a) for a in report.agents],
    ).model_dump(mode="json")


@router.get(
    "/budget",
    response_model=Envelope[BudgetOut],
    summary="Monthly budgets (workspace and per agent) with this month's spend",
)
async def get_budget(session: SessionDep, workspace_id: ViewerWorkspaceDep) -> dict[str, Any]:
    return ok(await _budgets(session, workspace_id))


@router.put(
    "/budget",
    response_model=Envelope[BudgetOut],
    summary="Set the workspace's or an agent's monthly budget (null removes it)",
)
async def put_budget(
    body: BudgetIn, session: SessionDep, workspace_id: AdminWorkspaceDep
) -> dict[str, Any]:
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
    return ok(await _budgets(session, workspace_id))
