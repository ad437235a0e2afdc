from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Query
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Editor, PageDep, Viewer
from api.errors import Conflict, NotFound, Unprocessable
from api.resources import Resource, commit_unique, get_or_404, paginate, workflow_version
from api.routes.resource import resource_router
from api.schemas.common import MAX_DB_ID, Envelope, Page, error_responses, ok
from api.schemas.workflows import WorkflowCreate, WorkflowOut, WorkflowUpdate, WorkflowVersionOut
from infra.models import (
    Agent,
    Execution,
    Tool,
    Workflow,
    WorkflowVersion,
    WorkflowVersionRef,
)
from infra.settings import Settings
from workflows.definition import Definition, graph_problems

ACTIVE_STATUSES = ("pending", "running", "waiting")


def draft_json(definition: Definition) -> dict[str, Any]:
    # Drafts keep what the client wrote; published snapshots keep every default (below).
    written = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {"nodes": [], "edges": [], **written}


class Workflows(Resource[Workflow]):
    name_max_length = 200
    summaries = {
        "create": "Create a workflow (as a draft)",
        "update": "Edit the draft (published versions never change)",
        "delete": "Delete a workflow, its versions and finished executions",
    }

    async def new(
        self, session: AsyncSession, workspace_id: int, body: WorkflowCreate, settings: Settings
    ) -> Workflow:
        return Workflow(
            workspace_id=workspace_id,
            name=body.name,
            description=body.description,
            definition=draft_json(body.definition),
            version=0,
            has_unpublished_changes=True,
        )

    async def columns(
        self, session: AsyncSession, item: Workflow, sent: dict[str, Any], settings: Settings
    ) -> dict[str, Any]:
        """Edits the draft; it has unpublished changes once its definition differs."""
        columns = dict(sent)
        if "definition" in columns:
            draft = draft_json(columns.pop("definition"))
            if draft != item.definition:
                columns.update(definition=draft, has_unpublished_changes=True)
        return columns

    async def check_deletable(self, session: AsyncSession, item: Workflow) -> None:
        active = await session.scalar(
            select(func.count())
            .select_from(Execution)
            .where(Execution.workflow_id == item.id, Execution.status.in_(ACTIVE_STATUSES))
        )
        if active:
            raise Conflict(
                f"workflow {item.id} has {active} execution(s) pending or running; "
                "cancel them or wait for them to finish first",
                {"active_executions": active},
            )


async def _by_status(
    status: Annotated[Literal["draft", "published"] | None, Query()] = None,
) -> list[ColumnElement[bool]]:
    if status == "draft":
        return [Workflow.version == 0]
    if status == "published":
        return [Workflow.version > 0]
    return []


workflows = Workflows(Workflow, "workflow")
router = resource_router(
    workflows, out=WorkflowOut, create=WorkflowCreate, update=WorkflowUpdate, filters=_by_status
)


@router.post(
    "/{workflow_id}/publish",
    summary="Validate the draft and publish it as the next immutable version",
    responses=error_responses(404, 409),
)
async def publish_workflow(workflow_id: int, editor: Editor) -> Envelope[WorkflowOut]:
    session, workspace_id = editor.session, editor.workspace_id
    # One publish of a workflow at a time: the others wait here for its row's lock, then
    # see the version it made. Without the lock, inserting the version takes a share lock
    # on this row (its foreign key) and then waits for a concurrent publish's version,
    # which waits for this row to update it: a deadlock on MariaDB (a 503), not a 409.
    workflow = await get_or_404(
        session, Workflow, workflow_id, workspace_id, workflows.label, for_update=True
    )
    if workflow.version > 0 and not workflow.has_unpublished_changes:
        raise Conflict(
            f"workflow {workflow.id} has no changes since version {workflow.version}; "
            "edit the draft before publishing again"
        )
    definition = Definition.model_validate(workflow.definition)
    agent_ids = set(
        await session.scalars(
            select(Agent.id).where(
                Agent.workspace_id == workspace_id, Agent.id.in_(definition.agent_ids())
            )
        )
    )
    tool_ids = set(
        await session.scalars(
            select(Tool.id).where(
                Tool.workspace_id == workspace_id, Tool.id.in_(definition.tool_ids())
            )
        )
    )
    problems = graph_problems(definition, agent_ids, tool_ids)
    if problems:
        first = problems[0].msg
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise Unprocessable(
            f"workflow {workflow.id} cannot be published: {first}{more}",
            [p.model_dump() for p in problems],
        )
    version = WorkflowVersion(
        workflow_id=workflow.id,
        version=workflow.version + 1,
        definition=definition.model_dump(mode="json", by_alias=True),
    )
    session.add(version)
    await session.flush()
    session.add_all(
        [
            WorkflowVersionRef(workflow_version_id=version.id, ref_type="agent", ref_id=i)
            for i in sorted(definition.agent_ids())
        ]
        + [
            WorkflowVersionRef(workflow_version_id=version.id, ref_type="tool", ref_id=i)
            for i in sorted(definition.tool_ids())
        ]
    )
    workflow.version = version.version
    workflow.has_unpublished_changes = False
    await commit_unique(
        session, f"workflow {workflow.id} was published concurrently; fetch it and retry"
    )
    await session.refresh(workflow)
    return ok(WorkflowOut.model_validate(workflow))


async def _viewed(workflow_id: int, viewer: Viewer) -> Workflow:
    return await workflows.get(viewer.session, workflow_id, viewer.workspace_id)


# The workflow named in the path, in a viewer's workspace.
ViewedWorkflow = Annotated[Workflow, Depends(_viewed)]


async def _published(workflow_id: int, version: int, viewer: Viewer) -> WorkflowVersion:
    """The published version named in the path."""
    workflow = await _viewed(workflow_id, viewer)
    row = None
    if 1 <= version <= MAX_DB_ID:
        row = await workflow_version(viewer.session, workflow.id, version)
    if row is None:
        raise NotFound(f"workflow {workflow.id} has no version {version}")
    return row


@router.get(
    "/{workflow_id}/versions",
    summary="List published versions, newest first",
    responses=error_responses(404),
)
async def list_versions(
    workflow: ViewedWorkflow, viewer: Viewer, page: PageDep
) -> Envelope[Page[WorkflowVersionOut]]:
    stmt = (
        select(WorkflowVersion)
        .where(WorkflowVersion.workflow_id == workflow.id)
        .order_by(WorkflowVersion.version.desc())
    )
    return ok(await paginate(viewer.session, stmt, page, WorkflowVersionOut.model_validate))


@router.get(
    "/{workflow_id}/versions/{version}",
    summary="Get one published version",
    responses=error_responses(404),
)
async def get_version(
    published: Annotated[WorkflowVersion, Depends(_published)],
) -> Envelope[WorkflowVersionOut]:
    return ok(WorkflowVersionOut.model_validate(published))
