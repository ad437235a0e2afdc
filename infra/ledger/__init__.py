"""The usage ledger: what every LLM call and tool call cost, and the budgets that limit it.

One concern a module; this package names what the rest of Keel uses:

- ``infra.ledger.recording``: one priced ``usage_records`` row per call, written exactly
  once (``usage_key``, ``record_llm_call``, ``record_tool_call``).
- ``infra.ledger.reports``: totals, per agent, per UTC hour or day and per execution,
  summed in SQL.
- ``infra.ledger.budgets``: monthly limits for the workspace or an agent, and whether a
  new call or execution may start (``budget_block``, ``execution_budget_block``; a
  model call reads ``budgets_in_scope`` and checks ``first_exhausted``).
- Money itself (its name, *usd*, how it is stored, summed and written) is
  ``infra.usd``'s.
"""

from infra.ledger.budgets import (
    BudgetInScope,
    BudgetReport,
    BudgetState,
    budget_block,
    budget_report,
    budgets_in_scope,
    execution_budget_block,
    first_exhausted,
    set_budget,
    spent,
    start_of_month,
)
from infra.ledger.recording import Kind, record_llm_call, record_tool_call, usage_key
from infra.ledger.reports import (
    MAX_BUCKETS,
    AgentUsage,
    ExecutionUsage,
    Granularity,
    UsageBucket,
    UsageFilter,
    UsageTotals,
    agent_breakdown,
    bucket_count,
    bucket_starts,
    execution_usage,
    usage_history,
    usage_totals,
)

__all__ = [
    "MAX_BUCKETS",
    "AgentUsage",
    "BudgetInScope",
    "BudgetReport",
    "BudgetState",
    "ExecutionUsage",
    "Granularity",
    "Kind",
    "UsageBucket",
    "UsageFilter",
    "UsageTotals",
    "agent_breakdown",
    "bucket_count",
    "bucket_starts",
    "budget_block",
    "budget_report",
    "budgets_in_scope",
    "execution_budget_block",
    "execution_usage",
    "first_exhausted",
    "record_llm_call",
    "record_tool_call",
    "set_budget",
    "spent",
    "start_of_month",
    "usage_history",
    "usage_key",
    "usage_totals",
]
