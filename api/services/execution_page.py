"""A page of executions with their node runs and usage, in two queries.

The first reads the page (newest first): a CTE picks the page's ids with the count
of all matches (a window count, so no separate COUNT query), joined back to the
executions and to each one's usage summed from the ledger (for the page's
executions only); the second reads the page's node runs. Plain rows, no ORM
objects: the list only reads. SQLite 3.25+ and MySQL 8 / MariaDB 10.2+ have the
CTEs and window functions this needs.

One single query (node runs joined too) measured slower than these two: every node
run's row then repeats all of its execution's columns (bench/api_layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Row, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.ledger import ExecutionUsage
from infra.models import Execution, NodeRun, UsageRecord
from infra.usd import usd_from_sum, usd_sum

EXECUTIONS = Execution.__table__
NODE_RUNS = NodeRun.__table__
USAGE = UsageRecord.__table__
NODE_COLUMNS = [
    NODE_RUNS.c[name]
    for name in (
        "execution_id",
        "node_id",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "output",
        "error",
        "reused",
    )
]


class ExecutionRow:
    """An execution as the list shows it: its columns as attributes, its node runs (in
    order) and usage. Plain instance attributes: the page reads ~15 of them per row."""

    def __init__(self, columns: dict[str, Any], usage: ExecutionUsage) -> None:
        self.__dict__.update(columns)
        self.id: int = columns["id"]
        self.nodes: list[Row[Any]] = []
        self.usage = usage

    def __getattr__(self, name: str) -> Any:  # the columns, for the type checker
        raise AttributeError(name)


@dataclass
class ExecutionPage:
    items: list[ExecutionRow]
    total: int


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """Which executions a page lists: a workspace's, of one status and of one workflow
    when given, and among the ``ids`` (or, ``ids_excluded``, outside them) when given."""

    workspace_id: int
    status: str | None = None
    workflow_id: int | None = None
    ids: list[int] | None = None
    ids_excluded: bool = False

    def shape(self) -> tuple[bool, bool, bool | None]:
        """What the statement depends on (its values are bound parameters)."""
        return (
            self.status is not None,
            self.workflow_id is not None,
            None if self.ids is None else self.ids_excluded,
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        columns = EXECUTIONS.c
        where = [columns.workspace_id == bindparam("workspace_id")]
        if self.status is not None:
            where.append(columns.status == bindparam("status"))
        if self.workflow_id is not None:
            where.append(columns.workflow_id == bindparam("workflow_id"))
        if self.ids is not None:
            ids: BindParameter[int] = bindparam("ids", expanding=True)
            where.append(columns.id.not_in(ids) if self.ids_excluded else columns.id.in_(ids))
        return where

    def params(self) -> dict[str, Any]:
        """The bound parameters' values, for the parameters ``conditions`` uses."""
        values = {
            "workspace_id": self.workspace_id,
            "status": self.status,
            "workflow_id": self.workflow_id,
            "ids": self.ids,
        }
        return {name: value for name, value in values.items() if value is not None}


# The page's statement per (dialect, filter shape), built once: building it (a CTE, a
# subquery, their column collections) was ~15% of a page's CPU, every request.
_PAGE_STATEMENTS: dict[tuple[str, tuple[bool, bool, bool | None]], Select[Any]] = {}


def _page_statement(dialect: str, where: list[ColumnElement[bool]]) -> Select[Any]:
    # The page's ids only: a CTE of all of the executions' columns would cost a column
    # proxy per column per request (a quarter of the list's CPU, measured).
    page = (
        select(EXECUTIONS.c.id, func.count().over().label("total_matching"))
        .where(*where)
        .order_by(EXECUTIONS.c.id.desc())
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
        .cte("page")
    )
    usage = (  # summed for the page's executions only
        select(
            USAGE.c.execution_id,
            func.sum(USAGE.c.prompt_tokens).label("prompt_tokens"),
            func.sum(USAGE.c.completion_tokens).label("completion_tokens"),
            usd_sum(dialect, USAGE.c.cost_usd).label("cost_usd_sum"),
        )
        .join(page, page.c.id == USAGE.c.execution_id)
        .group_by(USAGE.c.execution_id)
        .subquery("usage")
    )
    return (
        select(
            EXECUTIONS,
            page.c.total_matching,
            usage.c.prompt_tokens,
            usage.c.completion_tokens,
            usage.c.cost_usd_sum,
        )
        .join(page, page.c.id == EXECUTIONS.c.id)
        .outerjoin(usage, usage.c.execution_id == EXECUTIONS.c.id)
        .order_by(EXECUTIONS.c.id.desc())
    )


async def execution_page(
    session: AsyncSession, matching: ExecutionFilter, offset: int, limit: int
) -> ExecutionPage:
    dialect = session.get_bind().dialect.name
    key = (dialect, matching.shape())
    stmt = _PAGE_STATEMENTS.get(key)
    if stmt is None:
        stmt = _PAGE_STATEMENTS[key] = _page_statement(dialect, matching.conditions())
    params = matching.params()
    items: list[ExecutionRow] = []
    total = 0
    names = EXECUTIONS.c.keys()
    for row in (
        await session.execute(stmt, {**params, "offset": offset, "limit": limit})
    ).mappings():
        items.append(
            ExecutionRow(
                {name: row[name] for name in names},
                usage=ExecutionUsage(
                    int(row["prompt_tokens"] or 0),
                    int(row["completion_tokens"] or 0),
                    usd_from_sum(dialect, row["cost_usd_sum"]),
                ),
            )
        )
        total = int(row["total_matching"])
    if not items:
        if offset:  # a page past the end has no row to carry the count
            count = select(func.count()).select_from(EXECUTIONS).where(*matching.conditions())
            total = await session.scalar(count, params) or 0
        return ExecutionPage(items, total)
    by_id = {item.id: item for item in items}
    for node in await session.execute(
        select(*NODE_COLUMNS)
        .where(NODE_RUNS.c.execution_id.in_(list(by_id)))
        .order_by(NODE_RUNS.c.id)
    ):
        by_id[node.execution_id].nodes.append(node)
    return ExecutionPage(items, total)
