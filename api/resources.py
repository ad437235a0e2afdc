"""The one CRUD path of a workspace's named resources: agents, tools and workflows.

``Resource`` does what all of them do the same way: get or 404, a page of the list
(filtered by name with ``q``), name uniqueness, create, partial update and delete, each
commit turning a lost name race into 409. ``api.routes.resource.resource_router``
serves them over HTTP; a subclass per kind (in its module in ``api/routes``) holds only
what is special to it. ``get_or_404`` and ``paginate`` serve every other listing too (executions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import PageParams
from api.errors import Conflict, NotFound
from api.schemas.common import MAX_DB_ID, Page
from infra.accounts import Caller
from infra.models import Base, Workflow, WorkflowVersion, WorkflowVersionRef
from infra.settings import Settings

M = TypeVar("M", bound=Base)


async def get_or_404(
    session: AsyncSession,
    model: type[M],
    item_id: int,
    workspace_id: int,
    label: str,
    *,
    for_update: bool = False,
) -> M:
    """The row, or 404. ``for_update``: read it with its row's lock (MySQL/MariaDB), as
    committed, holding the lock until the transaction ends."""
    # Ids outside the column's range name nothing (and would overflow the driver).
    item = (
        await session.get(model, item_id, with_for_update=for_update or None)
        if 1 <= item_id <= MAX_DB_ID
        else None
    )
    if item is None or getattr(item, "workspace_id", workspace_id) != workspace_id:
        raise NotFound(f"{label} {item_id} does not exist")
    return item


async def paginate(
    session: AsyncSession, stmt: Select[Any], params: PageParams, render: Callable[[Any], Any]
) -> Page[Any]:
    total = (
        await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    )
    rows: Sequence[Any] = []
    if params.offset < total:  # a page past the end is empty: no query, no absurd OFFSET
        rows = (await session.scalars(stmt.offset(params.offset).limit(params.page_size))).all()
    items = [render(row) for row in rows]
    return Page(items=items, total=total, page=params.page, page_size=params.page_size)


def contains(column: Any, text: str) -> Any:
    """Case-insensitive substring match, with LIKE wildcards in ``text`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


class Resource(Generic[M]):
    """One kind of named row in a workspace (``model`` has id, workspace_id and name).

    ``label`` names one in messages ("agent 7 does not exist"), ``one`` with its article
    ("an agent named 'x' already exists"). A subclass says what is special to its kind:
    how a create body becomes a row (``new``), how the fields an update sent become
    columns (``columns``), and what refuses a delete (``check_deletable``); and, for its
    routes, the longest name the list's ``q`` takes and the OpenAPI summaries ("create",
    "update", "delete") where the default won't do."""

    name_max_length: ClassVar[int] = 100
    summaries: ClassVar[dict[str, str]] = {}

    def __init__(self, model: type[M], label: str, *, article: str = "a") -> None:
        self.model = model
        self.label = label
        self.one = f"{article} {label}"
        self.plural = f"{label}s"
        self._columns: Any = model  # the mapped class, for building queries

    async def new(
        self, session: AsyncSession, workspace_id: int, body: Any, settings: Settings
    ) -> M:
        """The row to store for a create request (its name is already known to be free)."""
        raise NotImplementedError

    async def columns(
        self, session: AsyncSession, item: M, sent: dict[str, Any], settings: Settings
    ) -> dict[str, Any]:
        """The columns to set for the fields an update sent (a new name is already free)."""
        return sent

    async def check_deletable(self, session: AsyncSession, item: M) -> None:
        """Raise Conflict while something still needs ``item``."""

    def authorize(self, caller: Caller, item: M | None, sent: dict[str, Any]) -> None:
        """Raise Forbidden when this change (a create when ``item`` is None) needs more
        than the editor role every change needs."""

    async def get(self, session: AsyncSession, item_id: int, workspace_id: int) -> M:
        return await get_or_404(session, self.model, item_id, workspace_id, self.label)

    async def read(self, session: AsyncSession, item_id: int, workspace_id: int) -> Any:
        """What ``GET /<Label>/{id}`` shows, for its out model to validate: the row (or
        404). A kind whose row needs more than one query may read it in one here."""
        return await self.get(session, item_id, workspace_id)

    async def page(
        self,
        session: AsyncSession,
        workspace_id: int,
        params: PageParams,
        q: str | None,
        render: Callable[[M], Any],
        where: Sequence[ColumnElement[bool]] = (),
    ) -> Page[Any]:
        """A page of the workspace's rows, oldest first; ``q``: the name contains it."""
        columns = self._columns
        stmt = select(self.model).where(columns.workspace_id == workspace_id, *where)
        if q:
            stmt = stmt.where(contains(columns.name, q))
        return await paginate(session, stmt.order_by(columns.id), params, render)

    async def ensure_name_free(
        self, session: AsyncSession, workspace_id: int, name: str, exclude_id: int | None = None
    ) -> None:
        # Case-insensitive everywhere, as MySQL's collation compares names anyway.
        columns = self._columns
        stmt = select(columns.id).where(
            columns.workspace_id == workspace_id, func.lower(columns.name) == name.lower()
        )
        if exclude_id is not None:
            stmt = stmt.where(columns.id != exclude_id)
        if await session.scalar(stmt) is not None:
            raise Conflict(f"{self.one} named {name!r} already exists; choose another name")

    async def create(
        self, session: AsyncSession, workspace_id: int, body: Any, settings: Settings
    ) -> M:
        await self.ensure_name_free(session, workspace_id, body.name)
        item = await self.new(session, workspace_id, body, settings)
        session.add(item)
        await commit_unique(session, self._taken(item))
        return item

    async def update(
        self, session: AsyncSession, item: M, sent: dict[str, Any], settings: Settings
    ) -> M:
        """Change the fields ``sent`` (a partial update) and store them."""
        current: Any = item
        if "name" in sent and sent["name"] != current.name:
            await self.ensure_name_free(
                session, current.workspace_id, sent["name"], exclude_id=current.id
            )
        for column, value in (await self.columns(session, item, sent, settings)).items():
            setattr(item, column, value)
        await commit_unique(session, self._taken(item))
        await session.refresh(item)
        return item

    async def delete(self, session: AsyncSession, item: M) -> None:
        await self.check_deletable(session, item)
        await session.delete(item)
        await session.commit()

    def _taken(self, item: M) -> str:
        # Read before the commit: after a failed one the row's columns are expired.
        name: Any = getattr(item, "name", None)
        return f"{self.one} named {name!r} already exists"


async def commit_unique(session: AsyncSession, conflict_msg: str) -> None:
    """Commit; a unique-constraint race (another request was first) is 409, not 500."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(conflict_msg) from exc


async def workflow_version(
    session: AsyncSession, workflow_id: int, number: int
) -> WorkflowVersion | None:
    """Version ``number`` of a workflow, as published; None if there is no such version."""
    version: WorkflowVersion | None = await session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == number
        )
    )
    return version


async def published_version(
    session: AsyncSession, workflow_id: int, workspace_id: int, number: int | None
) -> WorkflowVersion:
    """Version ``number`` of a workspace's workflow (its latest when None), read with the
    workflow in one query: 404 for no such workflow or version, 409 if none is published."""
    row = None
    if 1 <= workflow_id <= MAX_DB_ID:
        row = (
            await session.execute(
                select(Workflow.version, WorkflowVersion)
                .outerjoin(
                    WorkflowVersion,
                    (WorkflowVersion.workflow_id == Workflow.id)
                    & (WorkflowVersion.version == (number or Workflow.version)),
                )
                .where(Workflow.id == workflow_id, Workflow.workspace_id == workspace_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"workflow {workflow_id} does not exist")
    latest, version = row
    if latest == 0:
        raise Conflict(f"workflow {workflow_id} has no published version; publish it first")
    if version is None:
        raise NotFound(f"workflow {workflow_id} has no version {number}; the latest is {latest}")
    return version


async def refuse_if_published(session: AsyncSession, ref_type: str, ref_id: int) -> None:
    """409 while a published workflow version still names this agent or tool."""
    ref = (
        await session.execute(
            select(WorkflowVersion.workflow_id, WorkflowVersion.version, Workflow.name)
            .join(WorkflowVersionRef, WorkflowVersionRef.workflow_version_id == WorkflowVersion.id)
            .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
            .where(WorkflowVersionRef.ref_type == ref_type, WorkflowVersionRef.ref_id == ref_id)
            .order_by(WorkflowVersion.workflow_id, WorkflowVersion.version)
            .limit(1)
        )
    ).first()
    if ref is not None:
        raise Conflict(
            f"{ref_type} {ref_id} is used by workflow {ref.workflow_id} ({ref.name!r}) "
            f"version {ref.version}; published versions never change, so delete that "
            "workflow first",
            {"workflow_id": ref.workflow_id, "version": ref.version},
        )
