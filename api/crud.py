"""Small helpers the resource routes share: scoped lookup, paging, unique names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import PageParams
from api.errors import Conflict, NotFound
from api.schemas.common import MAX_DB_ID
from infra.models import Workflow, WorkflowVersion, WorkflowVersionRef

M = TypeVar("M")


async def get_or_404(session: AsyncSession, model: type[M], item_id: int, workspace_id: int,
                     label: str) -> M:
    # Ids outside the column's range name nothing (and would overflow the driver).
    item = await session.get(model, item_id) if 1 <= item_id <= MAX_DB_ID else None
    if item is None or getattr(item, "workspace_id", workspace_id) != workspace_id:
        raise NotFound(f"{label} {item_id} does not exist")
    return item


async def paginate(session: AsyncSession, stmt: Select[Any], params: PageParams,
                   render: Callable[[Any], Any]) -> dict[str, Any]:
    total = await session.scalar(
        select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows: Sequence[Any] = []
    if params.offset < total:  # a page past the end is empty: no query, no absurd OFFSET
        rows = (await session.scalars(stmt.offset(params.offset).limit(params.page_size))).all()
    return {
        "items": [render(row) for row in rows],
        "total": total,
        "page": params.page,
        "page_size": params.page_size,
    }


async def ensure_name_free(session: AsyncSession, model: Any, workspace_id: int, name: str,
                           label: str, exclude_id: int | None = None) -> None:
    # Case-insensitive everywhere, as MySQL's collation compares names anyway.
    stmt = select(model.id).where(model.workspace_id == workspace_id,
                                  func.lower(model.name) == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(model.id != exclude_id)
    if await session.scalar(stmt) is not None:
        raise Conflict(f"{label} named {name!r} already exists; choose another name")


async def commit_unique(session: AsyncSession, conflict_msg: str) -> None:
    """Commit; a unique-constraint race becomes 409 instead of 500."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(conflict_msg) from exc


def contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match, with LIKE wildcards in ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


async def refuse_if_published(session: AsyncSession, ref_type: str, ref_id: int) -> None:
    """409 while a published workflow version still names this agent or tool."""
    ref = (await session.execute(
        select(WorkflowVersion.workflow_id, WorkflowVersion.version, Workflow.name)
        .join(WorkflowVersionRef, WorkflowVersionRef.workflow_version_id == WorkflowVersion.id)
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .where(WorkflowVersionRef.ref_type == ref_type, WorkflowVersionRef.ref_id == ref_id)
        .order_by(WorkflowVersion.workflow_id, WorkflowVersion.version).limit(1)
    )).first()
    if ref is not None:
        raise Conflict(
            f"{ref_type} {ref_id} is used by workflow {ref.workflow_id} ({ref.name!r}) "
            f"version {ref.version}; published versions never change, so delete that "
            "workflow first",
            {"workflow_id": ref.workflow_id, "version": ref.version},
        )
