"""Billing: usage reports and budgets. Money is a decimal string with 6 places."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from api.schemas.common import DbId, InputModel, OutputModel, Timestamp
from infra.usd import usd_text


def _usd_text(value: object) -> object:
    return usd_text(value) if isinstance(value, Decimal) else value


# Built from the ledger's Decimal amounts (``model_validate(row)``), shown as text.
MoneyStr = Annotated[
    str,
    BeforeValidator(_usd_text),
    Field(description="USD, a decimal string with 6 places", examples=["0.001250"]),
]
MAX_BUDGET_USD = Decimal(1_000_000_000)


def _positive(value: Decimal | None) -> Decimal | None:
    if value is not None and value <= 0:
        raise ValueError("must be greater than 0; send null to remove the budget")
    return value


MonthlyUsd = Annotated[
    Decimal | None,
    Field(
        le=MAX_BUDGET_USD,
        decimal_places=6,
        description='USD per calendar month (UTC), as a string ("100.00") or a number; '
        "null removes the budget.",
    ),
    AfterValidator(_positive),
]


class Range(OutputModel):
    start: Timestamp
    end: Timestamp


class UsageReport(Range):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: MoneyStr
    llm_calls: int
    tool_calls: int
    executions: int = Field(description="Executions with usage in the range.")
    unpriced_calls: int = Field(
        description="LLM calls of models the pricing table does not know; counted at $0."
    )


class AgentUsageItem(OutputModel):
    agent_id: int
    agent_name: str | None = Field(description="null when the agent has been deleted.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: MoneyStr
    llm_calls: int
    tool_calls: int
    unpriced: bool = Field(description="Some calls used a model without a price ($0 counted).")
    unpriced_models: list[str]


class AgentBreakdown(Range):
    items: list[AgentUsageItem]


class HistoryBucket(OutputModel):
    bucket_start: Timestamp
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: MoneyStr
    llm_calls: int
    tool_calls: int


class UsageHistory(Range):
    granularity: str
    items: list[HistoryBucket]


class BudgetIn(InputModel):
    monthly_usd: MonthlyUsd
    agent_id: DbId | None = Field(
        default=None, description="The agent to limit; omit for the workspace."
    )


class BudgetLine(OutputModel):
    agent_id: int | None
    agent_name: str | None
    monthly_usd: MoneyStr | None = Field(description="null: no budget.")
    spent_usd: MoneyStr
    remaining_usd: MoneyStr | None
    exhausted: bool
    updated_at: Timestamp | None


class BudgetOut(OutputModel):
    month_start: Timestamp
    workspace: BudgetLine
    agents: list[BudgetLine]
