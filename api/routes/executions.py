from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.deps import (
    EditorDep,
    EditorWorkspaceDep,
    PageDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    ViewerWorkspaceDep,
)
from api.errors import Conflict, NotFound, PaymentRequired, ServiceUnavailable
from api.principal import CLOSE_UNAUTHORIZED, websocket_caller
from api.resources import get_or_404
from api.schemas.accounts import PrincipalOut
from api.schemas.common import MAX_DB_ID, Envelope, Page, error_responses, ok
from api.schemas.executions import (
    CloseCode,
    EventPage,
    ExecutionCreate,
    ExecutionOut,
    NodeRunOut,
    RerunBody,
    SignalBody,
    TemporalRef,
    UsageOut,
)
from api.services import executions as execution_service
from api.services.event_hub import Draining, EventHub, public_event, stored_events
from api.services.execution_page import ExecutionRow, execution_page
from api.services.problems import execution_ids_with_problems
from infra.execution_store import last_seq
from infra.ledger import ExecutionUsage, execution_budget_block, execution_usage
from infra.models import Execution, NodeRun, Workflow, WorkflowVersion
from infra.settings import Settings
from infra.temporal import ui_url
from infra.usd import usd_text
from workflows.contracts import HumanResponse
from workflows.execution import ExecutionWorkflow
from workflows.status import FINISHED, ExecutionStatus, NodeStatus

router = APIRouter(prefix="/api/v1/Execution", tags=["Execution"])

NODE_COLUMNS = (
    NodeRun.execution_id,
    NodeRun.node_id,
    NodeRun.status,
    NodeRun.attempts,
    NodeRun.started_at,
    NodeRun.finished_at,
    NodeRun.output,
    NodeRun.error,
    NodeRun.reused,
)


async def node_runs(session: AsyncSession, execution_ids: list[int]) -> dict[int, list[Row[Any]]]:
    """The node runs of these executions, as plain rows: read-only here, so no ORM objects."""
    runs: dict[int, list[Row[Any]]] = {i: [] for i in execution_ids}
    for run in await session.execute(
        select(*NODE_COLUMNS).where(NodeRun.execution_id.in_(execution_ids)).order_by(NodeRun.id)
    ):
        runs[run.execution_id].append(run)
    return runs


async def render(
    session: AsyncSession,
    settings: Settings,
    execution: Execution | ExecutionRow,
    nodes: list[Row[Any]] | None = None,
    usage: ExecutionUsage | None = None,
    problems: list[str] | None = None,
) -> ExecutionOut:
    if nodes is None:
        nodes = (await node_runs(session, [execution.id]))[execution.id]
    if usage is None:
        usage = (await execution_usage(session, [execution.id]))[execution.id]
    run_key = execution.temporal_workflow_id
    return ExecutionOut(
        id=execution.id,
        workflow_id=execution.workflow_id,
        workflow_version=execution.workflow_version,
        status=ExecutionStatus(execution.status),
        input=execution.input,
        output=execution.output,
        error=execution.error,
        nodes=[
            NodeRunOut(
                node_id=n.node_id,
                status=NodeStatus(n.status),
                attempts=n.attempts,
                started_at=n.started_at,
                finished_at=n.finished_at,
                output=n.output,
                error=n.error,
                reused=bool(n.reused),
            )
            for n in nodes
        ],
        usage=UsageOut(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usd_text(usage.cost_usd),
        ),
        temporal=TemporalRef(
            workflow_id=run_key,
            run_id=execution.temporal_run_id,
            ui_url=ui_url(settings, run_key, execution.temporal_run_id) if run_key else None,
            problems=problems or [],
        ),
        created_at=execution.created_at,
        started_at=execution.started_at,
        finished_at=execution.finished_at,
        parent_execution_id=execution.parent_execution_id,
        created_by=None
        if execution.created_by_type is None
        else PrincipalOut.model_validate(
            {
                "type": execution.created_by_type,
                "id": execution.created_by_id,
                "name": execution.created_by_name or "",
            }
        ),
    )


async def _load(session: AsyncSession, execution_id: int, workspace_id: int) -> Execution:
    return await get_or_404(session, Execution, execution_id, workspace_id, "execution")


async def _viewed(
    execution_id: int, session: SessionDep, workspace_id: ViewerWorkspaceDep
) -> Execution:
    return await _load(session, execution_id, workspace_id)


async def _edited(
    execution_id: int, session: SessionDep, workspace_id: EditorWorkspaceDep
) -> Execution:
    return await _load(session, execution_id, workspace_id)


# The execution named in the path, in the caller's workspace, for a viewer or an editor.
ViewedExecution = Annotated[Execution, Depends(_viewed)]
EditedExecution = Annotated[Execution, Depends(_edited)]


async def refuse_over_budget(
    session: AsyncSession, workspace_id: int, workflow_id: int, version: int, refused: str
) -> None:
    """402 while the workspace's or a used agent's budget for this month is spent."""
    blocked = await execution_budget_block(session, workspace_id, workflow_id, version)
    if blocked:
        raise PaymentRequired(f"{refused}: {blocked}")


async def _commit_and_start(
    session: AsyncSession, temporal: Client, settings: Settings, execution: Execution, start: bool
) -> dict[str, Any]:
    """Store the execution, start its Temporal run when asked, and answer with it."""
    await session.commit()
    if start:
        await execution_service.start(session, temporal, settings, execution)
        await session.commit()
    return ok(await render(session, settings, execution))


@router.post(
    "/",
    status_code=201,
    response_model=Envelope[ExecutionOut],
    summary="Create an execution of a published version (and start it if asked)",
    responses=error_responses(402),
)
async def create_execution(
    body: ExecutionCreate,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    caller: EditorDep,
) -> dict[str, Any]:
    workspace_id = caller.workspace_id
    workflow = await get_or_404(session, Workflow, body.workflow_id, workspace_id, "workflow")
    if workflow.version == 0:
        raise Conflict(f"workflow {workflow.id} has no published version; publish it first")
    version = body.version or workflow.version
    exists = await session.scalar(
        select(WorkflowVersion.id).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == version
        )
    )
    if exists is None:
        raise NotFound(
            f"workflow {workflow.id} has no version {version}; the latest is {workflow.version}"
        )
    await refuse_over_budget(
        session, workspace_id, workflow.id, version, "new executions are refused"
    )
    execution = Execution(
        workspace_id=workspace_id,
        workflow_id=workflow.id,
        workflow_version=version,
        status=ExecutionStatus.PENDING,
        input=body.input,
        created_by_type=caller.principal.type,
        created_by_id=caller.principal.id,
        created_by_name=caller.principal.name,
    )
    session.add(execution)
    return await _commit_and_start(session, temporal, settings, execution, body.start)


@router.get(
    "/", response_model=Envelope[Page[ExecutionOut]], summary="List executions, newest first"
)
async def list_executions(
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    workspace_id: ViewerWorkspaceDep,
    page: PageDep,
    status: Annotated[ExecutionStatus | None, Query()] = None,
    workflow_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID)] = None,
    problems: Annotated[
        bool | None,
        Query(
            description="true: only runs Temporal reports as unable to advance "
            "(temporal.problems); false: only the others."
        ),
    ] = None,
) -> dict[str, Any]:
    where = [Execution.workspace_id == workspace_id]
    if problems is not None:
        try:
            stuck = await execution_ids_with_problems(temporal, settings.workflow_id_prefix)
        except RPCError as exc:
            raise ServiceUnavailable(
                f"Temporal did not answer which runs have problems: {exc.message}"
            ) from exc
        where.append(Execution.id.in_(stuck) if problems else Execution.id.not_in(stuck))
    if status:
        where.append(Execution.status == status)
    if workflow_id is not None:
        where.append(Execution.workflow_id == workflow_id)
    found = await execution_page(session, where, page.offset, page.page_size)
    return ok(
        {
            "items": [await render(session, settings, e, e.nodes, e.usage) for e in found.items],
            "total": found.total,
            "page": page.page,
            "page_size": page.page_size,
        }
    )


@router.get(
    "/{execution_id}",
    response_model=Envelope[ExecutionOut],
    summary="Get an execution (reconciled with Temporal while it is open)",
)
async def get_execution(
    execution: ViewedExecution, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> dict[str, Any]:
    problems = await execution_service.refresh(session, temporal, execution)
    return ok(await render(session, settings, execution, problems=problems))


@router.post(
    "/{execution_id}/rerun",
    status_code=201,
    response_model=Envelope[ExecutionOut],
    summary="Run a finished execution again, reusing the node results that still hold",
    responses=error_responses(402),
)
async def rerun_execution(
    execution_id: int,
    body: RerunBody,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    caller: EditorDep,
) -> dict[str, Any]:
    parent = await _load(session, execution_id, caller.workspace_id)
    await execution_service.refresh(session, temporal, parent)
    execution = await execution_service.create_rerun(
        session, parent, body.version, body.input, body.from_node
    )
    execution.created_by_type = caller.principal.type
    execution.created_by_id = caller.principal.id
    execution.created_by_name = caller.principal.name
    await refuse_over_budget(
        session,
        caller.workspace_id,
        execution.workflow_id,
        execution.workflow_version,
        "new executions are refused",
    )
    return await _commit_and_start(session, temporal, settings, execution, body.start)


@router.post(
    "/{execution_id}/start",
    response_model=Envelope[ExecutionOut],
    summary="Start a pending execution",
)
async def start_execution(
    execution: EditedExecution, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> dict[str, Any]:
    if execution.status == ExecutionStatus.PENDING:
        await refuse_over_budget(
            session,
            execution.workspace_id,
            execution.workflow_id,
            execution.workflow_version,
            f"execution {execution.id} cannot start",
        )
    return await _commit_and_start(session, temporal, settings, execution, start=True)


@router.post(
    "/{execution_id}/cancel",
    response_model=Envelope[ExecutionOut],
    summary="Cancel an execution; running work is stopped",
)
async def cancel_execution(
    execution_id: int,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    caller: EditorDep,
) -> dict[str, Any]:
    execution = await _load(session, execution_id, caller.workspace_id)
    await execution_service.refresh(session, temporal, execution)
    if execution.status in FINISHED:
        raise Conflict(
            f"execution {execution.id} already {execution.status}; there is nothing to cancel"
        )
    by = caller.principal.as_dict()
    if execution.temporal_workflow_id is None:
        cancelled = await execution_service.cancel_pending(session, execution, by)
        await session.commit()
        if cancelled or execution.temporal_workflow_id is None:
            return ok(await render(session, settings, execution))
    # No run id: the chain's current run, wherever continue-as-new has got to.
    handle = temporal.get_workflow_handle_for(ExecutionWorkflow.run, execution.temporal_workflow_id)
    try:
        # Who asked, then the cancel itself (the run's execution.cancelled says data.by).
        with contextlib.suppress(RPCError):
            await handle.signal(ExecutionWorkflow.cancel_requested, by)
        await handle.cancel()
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not accept the cancel: {exc.message}") from exc
    response = ok(await render(session, settings, execution))
    response["msg"] = "cancellation requested; the execution ends as cancelled"
    return response


@router.post(
    "/{execution_id}/signal",
    response_model=Envelope[ExecutionOut],
    summary="Answer a human node that is waiting",
)
async def signal_execution(
    execution_id: int,
    body: SignalBody,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    caller: EditorDep,
) -> dict[str, Any]:
    execution = await _load(session, execution_id, caller.workspace_id)
    if execution.status in FINISHED or execution.temporal_workflow_id is None:
        raise Conflict(
            f"execution {execution.id} is {execution.status}; node {body.node_id!r} is not waiting"
        )
    # No run id: the chain's current run, wherever continue-as-new has got to.
    handle = temporal.get_workflow_handle_for(ExecutionWorkflow.run, execution.temporal_workflow_id)
    try:
        # By reference to the workflow's update; the SDK types an async update's result as
        # its coroutine, hence the ignore.
        await handle.execute_update(  # type: ignore[unused-coroutine]
            ExecutionWorkflow.respond,
            HumanResponse(**body.model_dump(), by=caller.principal.as_dict()),
        )
    except WorkflowUpdateFailedError as exc:
        raise Conflict(str(exc.cause) if exc.cause else str(exc)) from exc
    except RPCError as exc:
        raise Conflict(
            f"execution {execution.id} is not accepting responses: {exc.message}"
        ) from exc
    await execution_service.refresh(session, temporal, execution)
    return ok(await render(session, settings, execution))


@router.get(
    "/{execution_id}/events",
    response_model=Envelope[EventPage],
    summary="Events after seq N (from the record once the run has finished)",
)
async def list_events(
    execution_id: int,
    session: SessionDep,
    temporal: TemporalDep,
    workspace_id: ViewerWorkspaceDep,
    after: Annotated[int, Query(ge=0, le=MAX_DB_ID, description="Last seq seen.")] = 0,
) -> dict[str, Any]:
    execution = await _load(session, execution_id, workspace_id)
    items = await stored_events(session, execution.id, after)
    stored_up_to = await last_seq(session, execution.id)
    if execution.status not in FINISHED and execution.temporal_workflow_id:
        with contextlib.suppress(RPCError, TimeoutError):
            live = await asyncio.wait_for(
                execution_service.read_events(
                    temporal, execution.temporal_workflow_id, max(after, stored_up_to)
                ),
                execution_service.TEMPORAL_TIMEOUT_S,
            )
            items.extend(live)
    return ok(
        {
            "items": [public_event(execution.id, i) for i in items],
            "next": items[-1].seq if items else after,
        }
    )


@router.websocket("/ws/{execution_id}")
async def watch_execution(websocket: WebSocket, execution_id: int) -> None:
    """Every event after ``after`` as one JSON message each; closes 1000 after the last.
    A viewer's credential (header or ``?ticket=``) is checked before anything is sent:
    4401 without one, 4404 for an execution of another workspace (or none)."""
    await websocket.accept()
    caller = await websocket_caller(websocket)
    if caller is None:
        await websocket.close(
            CLOSE_UNAUTHORIZED,
            "a valid credential is needed: an "
            "Authorization header or ?ticket= from POST /Auth/ws-ticket",
        )
        return
    raw_after = websocket.query_params.get("after", "0")
    if not (raw_after.isascii() and raw_after.isdigit()) or int(raw_after) > MAX_DB_ID:
        await websocket.close(
            CloseCode.BAD_AFTER, f"after must be a whole number from 0 to {MAX_DB_ID}"
        )
        return
    app = websocket.app
    execution = None
    if 1 <= execution_id <= MAX_DB_ID:
        async with app.state.sessions() as session:
            execution = await session.get(Execution, execution_id)
    if execution is None or execution.workspace_id != caller.workspace_id:
        await websocket.close(CloseCode.UNKNOWN, f"execution {execution_id} does not exist")
        return
    async with app.state.socket_guard.watching(caller, websocket):
        await _stream(websocket, execution_id, int(raw_after))


async def _stream(websocket: WebSocket, execution_id: int, after: int) -> None:
    app = websocket.app
    hub: EventHub = app.state.event_hub

    async def send_all() -> None:
        async for text in hub.watch(execution_id, after):
            await websocket.send_text(text)

    async def until_client_leaves() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()

    sender = asyncio.create_task(send_all())
    listener = asyncio.create_task(until_client_leaves())
    done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    for task in (sender, listener):
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if sender in done:
        error = sender.exception()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            if isinstance(error, Draining):  # this replica stops: resume on another
                await websocket.close(CloseCode.RESTART, "server restarting; reconnect with after")
            else:
                await websocket.close(
                    CloseCode.ERROR if error else CloseCode.NORMAL,
                    str(error)[:120] if error else None,
                )
