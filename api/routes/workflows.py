from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api.crud import commit_unique, contains, ensure_name_free, get_or_404, paginate
from api.deps import PageDep, SessionDep, WorkspaceDep
from api.errors import Conflict, NotFound, Unprocessable
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
from workflows.definition import Definition, graph_problems

router = APIRouter(prefix="/api/v1/Workflow", tags=["Workflow"], responses=error_responses(422))

ACTIVE_STATUSES = ("pending", "running", "waiting")


def draft_json(definition: Definition) -> dict[str, Any]:
    # Drafts keep what the client wrote; published snapshots keep every default (below).
    written = definition.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {"nodes": [], "edges": [], **written}


def render(workflow: Workflow) -> WorkflowOut:
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        description=workflow.description,
        definition=workflow.definition,
        status="published" if workflow.version > 0 else "draft",
        version=workflow.version,
        has_unpublished_changes=workflow.has_unpublished_changes,
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
    )


def render_version(version: WorkflowVersion) -> WorkflowVersionOut:
    return WorkflowVersionOut(
        workflow_id=version.workflow_id,
        version=version.version,
        definition=version.definition,
        created_at=version.created_at,
    )


@router.post("/", status_code=201, response_model=Envelope[WorkflowOut],
             summary="Create a workflow (as a draft)",
             responses=error_responses(409))
async def create_workflow(body: WorkflowCreate, session: SessionDep, workspace_id: WorkspaceDep
                          ) -> dict[str, Any]:
    await ensure_name_free(session, Workflow, workspace_id, body.name, "a workflow")
    workflow = Workflow(
        workspace_id=workspace_id,
        name=body.name,
        description=body.description,
        definition=draft_json(body.definition),
        version=0,
        has_unpublished_changes=True,
    )
    session.add(workflow)
    await commit_unique(session, f"a workflow named {body.name!r} already exists")
    return ok(render(workflow))


@router.get("/", response_model=Envelope[Page[WorkflowOut]], summary="List workflows")
async def list_workflows(
    session: SessionDep, workspace_id: WorkspaceDep, page: PageDep,
    q: Annotated[str | None, Query(max_length=200, description="Name contains.")] = None,
    status: Annotated[Literal["draft", "published"] | None, Query()] = None,
) -> dict[str, Any]:
    stmt = select(Workflow).where(Workflow.workspace_id == workspace_id).order_by(Workflow.id)
    if q:
        stmt = stmt.where(contains(Workflow.name, q))
    if status == "draft":
        stmt = stmt.where(Workflow.version == 0)
    elif status == "published":
        stmt = stmt.where(Workflow.version > 0)
    return ok(await paginate(session, stmt, page, render))


@router.get("/{workflow_id}", response_model=Envelope[WorkflowOut], summary="Get a workflow",
            responses=error_responses(404))
async def get_workflow(workflow_id: int, session: SessionDep, workspace_id: WorkspaceDep
                       ) -> dict[str, Any]:
    return ok(render(await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")))


@router.put("/{workflow_id}", response_model=Envelope[WorkflowOut],
            summary="Edit the draft (published versions never change)",
            responses=error_responses(404, 409))
async def update_workflow(workflow_id: int, body: WorkflowUpdate, session: SessionDep,
                          workspace_id: WorkspaceDep) -> dict[str, Any]:
    workflow = await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")
    sent = body.model_fields_set
    nulls = [f for f in sent if getattr(body, f) is None]
    if nulls:
        raise Unprocessable(f"{nulls[0]} cannot be null",
                            [{"loc": ["body", f], "msg": "cannot be null", "type": "null"}
                             for f in nulls])
    if body.name is not None and body.name != workflow.name:
        await ensure_name_free(session, Workflow, workspace_id, body.name, "a workflow",
                               exclude_id=workflow.id)
        workflow.name = body.name
    if body.description is not None:
        workflow.description = body.description
    if body.definition is not None and draft_json(body.definition) != workflow.definition:
        workflow.definition = draft_json(body.definition)
        workflow.has_unpublished_changes = True
    await commit_unique(session, f"a workflow named {body.name!r} already exists")
    await session.refresh(workflow)
    return ok(render(workflow))


@router.delete("/{workflow_id}", response_model=Envelope[None],
               summary="Delete a workflow, its versions and finished executions",
               responses=error_responses(404, 409))
async def delete_workflow(workflow_id: int, session: SessionDep, workspace_id: WorkspaceDep
                          ) -> dict[str, Any]:
    workflow = await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")
    active = await session.scalar(
        select(func.count()).select_from(Execution).where(
            Execution.workflow_id == workflow.id, Execution.status.in_(ACTIVE_STATUSES)
        )
    )
    if active:
        raise Conflict(
            f"workflow {workflow.id} has {active} execution(s) pending or running; "
            "cancel them or wait for them to finish first",
            {"active_executions": active},
        )
    await session.delete(workflow)
    await session.commit()
    return ok(None)


@router.post("/{workflow_id}/publish", response_model=Envelope[WorkflowOut],
             summary="Validate the draft and publish it as the next immutable version",
             responses=error_responses(404, 409))
async def publish_workflow(workflow_id: int, session: SessionDep, workspace_id: WorkspaceDep
                           ) -> dict[str, Any]:
    workflow = await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")
    if workflow.version > 0 and not workflow.has_unpublished_changes:
        raise Conflict(
            f"workflow {workflow.id} has no changes since version {workflow.version}; "
            "edit the draft before publishing again"
        )
    definition = Definition.model_validate(workflow.definition)
    agent_ids = set(await session.scalars(
        select(Agent.id).where(Agent.workspace_id == workspace_id,
                               Agent.id.in_(definition.agent_ids()))
    ))
    tool_ids = set(await session.scalars(
        select(Tool.id).where(Tool.workspace_id == workspace_id,
                              Tool.id.in_(definition.tool_ids()))
    ))
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
        [WorkflowVersionRef(workflow_version_id=version.id, ref_type="agent", ref_id=i)
         for i in sorted(definition.agent_ids())]
        + [WorkflowVersionRef(workflow_version_id=version.id, ref_type="tool", ref_id=i)
           for i in sorted(definition.tool_ids())]
    )
    workflow.version = version.version
    workflow.has_unpublished_changes = False
    await commit_unique(
        session, f"workflow {workflow.id} was published concurrently; fetch it and retry"
    )
    await session.refresh(workflow)
    return ok(render(workflow))


@router.get("/{workflow_id}/versions", response_model=Envelope[Page[WorkflowVersionOut]],
            summary="List published versions, newest first",
            responses=error_responses(404))
async def list_versions(workflow_id: int, session: SessionDep, workspace_id: WorkspaceDep,
                        page: PageDep) -> dict[str, Any]:
    await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")
    stmt = (select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow_id)
            .order_by(WorkflowVersion.version.desc()))
    return ok(await paginate(session, stmt, page, render_version))


@router.get("/{workflow_id}/versions/{version}", response_model=Envelope[WorkflowVersionOut],
            summary="Get one published version",
            responses=error_responses(404))
async def get_version(workflow_id: int, version: int, session: SessionDep,
                      workspace_id: WorkspaceDep) -> dict[str, Any]:
    await get_or_404(session, Workflow, workflow_id, workspace_id, "workflow")
    row = None
    if 1 <= version <= MAX_DB_ID:
        row = await session.scalar(select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version))
    if row is None:
        raise NotFound(f"workflow {workflow_id} has no version {version}")
    return ok(render_version(row))
