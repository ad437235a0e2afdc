from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import structlog
from fastapi import Depends, Query, Response, WebSocket, WebSocketDisconnect
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.deps import Context, Editor, PageDep, Viewer
from api.errors import PaymentRequired, ServiceUnavailable
from api.principal import CLOSE_UNAUTHORIZED, websocket_caller
from api.resources import get_or_404, published_version
from api.routes.router import PrefixRouter
from api.schemas.common import (
    MAX_DB_ID,
    Envelope,
    Page,
    error_responses,
    ok,
    ok_json,
    timestamp,
)
from api.schemas.executions import (
    CloseCode,
    EventPage,
    ExecutionCreate,
    ExecutionOut,
    RerunBody,
    SignalBody,
)
from api.services import executions as execution_service
from api.services.event_hub import Draining, EventHub, public_event, stored_events
from api.services.execution_page import ExecutionFilter, ExecutionRow, execution_page
from api.services.problems import execution_ids_with_problems
from infra.execution_store import last_seq
from infra.ledger import ExecutionUsage, execution_budget_block, execution_usage
from infra.models import Execution, NodeRun, WorkflowVersion
from infra.settings import Settings
from infra.temporal import ui_url
from infra.usd import usd_text
from workflows.contracts import HumanResponse
from workflows.definition import Definition
from workflows.status import FINISHED, ExecutionStatus

router = PrefixRouter(prefix="/api/v1/Execution", tags=["Execution"])
CANCEL_REQUESTED = "cancellation requested; the execution ends as cancelled"

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


def execution_fields(
    settings: Settings,
    execution: Execution | ExecutionRow,
    nodes: list[Row[Any]],
    usage: ExecutionUsage,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """An execution as ExecutionOut's fields in their JSON form: the list answers them as
    they are; a single execution's are validated once."""
    run_key = execution.temporal_workflow_id
    run_id = execution.temporal_run_id
    return {
        "id": execution.id,
        "workflow_id": execution.workflow_id,
        "workflow_version": execution.workflow_version,
        "status": execution.status,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "nodes": [
            {
                "node_id": n.node_id,
                "status": n.status,
                "attempts": n.attempts,
                "started_at": timestamp(n.started_at),
                "finished_at": timestamp(n.finished_at),
                "output": n.output,
                "error": n.error,
                "reused": bool(n.reused),
            }
            for n in nodes
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": usd_text(usage.cost_usd),
        },
        "temporal": {
            "workflow_id": run_key,
            "run_id": run_id,
            "ui_url": ui_url(settings, run_key, run_id) if run_key else None,
            "problems": problems or [],
        },
        "created_at": timestamp(execution.created_at),
        "started_at": timestamp(execution.started_at),
        "finished_at": timestamp(execution.finished_at),
        "parent_execution_id": execution.parent_execution_id,
        "created_by": None
        if execution.created_by_type is None
        else {
            "type": execution.created_by_type,
            "id": execution.created_by_id,
            "name": execution.created_by_name or "",
        },
    }


async def render(
    session: AsyncSession,
    settings: Settings,
    execution: Execution,
    problems: list[str] | None = None,
) -> ExecutionOut:
    """One execution as the API shows it, with its node runs and usage (two queries)."""
    nodes = (await node_runs(session, [execution.id]))[execution.id]
    usage = (await execution_usage(session, [execution.id]))[execution.id]
    return ExecutionOut.model_validate(
        execution_fields(settings, execution, nodes, usage, problems)
    )


def _log_with(execution_id: int) -> None:
    """Every later log line of this request or socket (its request line too) names the
    execution it acts on."""
    structlog.contextvars.bind_contextvars(execution_id=execution_id)


async def _load(execution_id: int, ctx: Context) -> Execution:
    _log_with(execution_id)  # the id asked for, found or not
    return await get_or_404(ctx.session, Execution, execution_id, ctx.workspace_id, "execution")


async def _viewed(execution_id: int, viewer: Viewer) -> Execution:
    return await _load(execution_id, viewer)


async def _edited(execution_id: int, editor: Editor) -> Execution:
    return await _load(execution_id, editor)


# The execution named in the path, in the caller's workspace, for a viewer or an editor.
ViewedExecution = Annotated[Execution, Depends(_viewed)]
EditedExecution = Annotated[Execution, Depends(_edited)]


async def refuse_over_budget(
    session: AsyncSession,
    execution: Execution,
    version: WorkflowVersion,
    refused: str = "new executions are refused",
) -> None:
    """402 while the workspace's budget for this month, or that of an agent the
    execution's workflow version uses, is spent."""
    agent_ids = Definition.model_validate(version.definition).agent_ids()
    blocked = await execution_budget_block(session, execution.workspace_id, agent_ids)
    if blocked:
        raise PaymentRequired(f"{refused}: {blocked}")


async def _answer(
    ctx: Context, execution: Execution, msg: str = "success"
) -> Envelope[ExecutionOut]:
    return ok(await render(ctx.session, ctx.settings, execution), msg)


async def _commit_and_start(
    editor: Context, execution: Execution, start: bool, version: WorkflowVersion | None = None
) -> None:
    """Store the execution and start its Temporal run when asked. ``version``: the
    execution's workflow version, when the caller has read it."""
    await editor.session.commit()
    _log_with(execution.id)  # a new execution (a rerun's, not its source's)
    if start:
        await execution_service.start(
            editor.session, editor.temporal, editor.settings, execution, version
        )


async def _create(
    editor: Context, execution: Execution, start: bool, version: WorkflowVersion
) -> Envelope[ExecutionOut]:
    """Store a new execution, start it when asked, and answer with it as created: no node
    has run and nothing is used yet, so neither is read (a started run records its own
    as it goes; a read of the execution shows them)."""
    await _commit_and_start(editor, execution, start, version)
    fields = execution_fields(editor.settings, execution, [], ExecutionUsage())
    return ok(ExecutionOut.model_validate(fields))


@router.post(
    "/",
    status_code=201,
    summary="Create an execution of a published version (and start it if asked)",
    responses=error_responses(402, 404, 409),
)
async def create_execution(body: ExecutionCreate, editor: Editor) -> Envelope[ExecutionOut]:
    version = await published_version(
        editor.session, body.workflow_id, editor.workspace_id, body.version
    )
    execution = Execution(
        workspace_id=editor.workspace_id,
        workflow_id=version.workflow_id,
        workflow_version=version.version,
        status=ExecutionStatus.PENDING,
        input=body.input,
    )
    _created_by(execution, editor)
    await refuse_over_budget(editor.session, execution, version)
    editor.session.add(execution)
    return await _create(editor, execution, body.start, version)


def _created_by(execution: Execution, editor: Context) -> None:
    principal = editor.caller.principal
    execution.created_by_type = principal.type
    execution.created_by_id = principal.id
    execution.created_by_name = principal.name


@router.get(
    "/", summary="List executions, newest first", response_model=Envelope[Page[ExecutionOut]]
)
async def list_executions(
    viewer: Viewer,
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
) -> Response:
    ids = None
    if problems is not None:
        try:
            ids = list(
                await execution_ids_with_problems(
                    viewer.temporal, viewer.settings.workflow_id_prefix
                )
            )
        except RPCError as exc:
            raise ServiceUnavailable(
                f"Temporal did not answer which runs have problems: {exc.message}"
            ) from exc
    matching = ExecutionFilter(
        viewer.workspace_id, status, workflow_id, ids, ids_excluded=problems is False
    )
    session, settings = viewer.session, viewer.settings
    found = await execution_page(session, matching, page.offset, page.page_size)
    # The rows are already the page's JSON: validating ~120 models per page to write them
    # out again was most of the list's CPU (docs/benchmarks.md).
    return ok_json(
        {
            "items": [execution_fields(settings, e, e.nodes, e.usage) for e in found.items],
            "total": found.total,
            "page": page.page,
            "page_size": page.page_size,
        }
    )


@router.get(
    "/{execution_id}",
    summary="Get an execution (reconciled with Temporal while it is open)",
)
async def get_execution(execution: ViewedExecution, viewer: Viewer) -> Envelope[ExecutionOut]:
    problems = await execution_service.refresh(viewer.session, viewer.temporal, execution)
    return ok(await render(viewer.session, viewer.settings, execution, problems=problems))


@router.post(
    "/{execution_id}/rerun",
    status_code=201,
    summary="Run a finished execution again, reusing the node results that still hold",
    responses=error_responses(402, 404, 409),
)
async def rerun_execution(
    parent: EditedExecution, body: RerunBody, editor: Editor
) -> Envelope[ExecutionOut]:
    await execution_service.refresh(editor.session, editor.temporal, parent)
    execution, version = await execution_service.create_rerun(
        editor.session, parent, body.version, body.input, body.from_node
    )
    _created_by(execution, editor)
    await refuse_over_budget(editor.session, execution, version)
    return await _create(editor, execution, body.start, version)


@router.post("/{execution_id}/start", summary="Start a pending execution")
async def start_execution(execution: EditedExecution, editor: Editor) -> Envelope[ExecutionOut]:
    version = None
    if execution.status == ExecutionStatus.PENDING:
        version = await execution_service.pinned_version(editor.session, execution)
        await refuse_over_budget(
            editor.session, execution, version, f"execution {execution.id} cannot start"
        )
    await _commit_and_start(editor, execution, True, version)
    return await _answer(editor, execution)


@router.post("/{execution_id}/cancel", summary="Cancel an execution; running work is stopped")
async def cancel_execution(execution: EditedExecution, editor: Editor) -> Envelope[ExecutionOut]:
    by = editor.caller.principal.as_dict()
    asked = await execution_service.cancel(editor.session, editor.temporal, execution, by)
    if asked:
        return await _answer(editor, execution, CANCEL_REQUESTED)
    return await _answer(editor, execution)


@router.post("/{execution_id}/signal", summary="Answer a human node that is waiting")
async def signal_execution(
    execution: EditedExecution, body: SignalBody, editor: Editor
) -> Envelope[ExecutionOut]:
    response = HumanResponse(**body.model_dump(), by=editor.caller.principal.as_dict())
    await execution_service.respond(editor.session, editor.temporal, execution, response)
    return await _answer(editor, execution)


@router.get(
    "/{execution_id}/events",
    summary="Events after seq N (from the record once the run has finished)",
)
async def list_events(
    execution: ViewedExecution,
    viewer: Viewer,
    after: Annotated[int, Query(ge=0, le=MAX_DB_ID, description="Last seq seen.")] = 0,
) -> Envelope[EventPage]:
    items = await stored_events(viewer.session, execution.id, after)
    stored_up_to = await last_seq(viewer.session, execution.id)
    if execution.status not in FINISHED and execution.temporal_workflow_id:
        with contextlib.suppress(RPCError, TimeoutError):
            live = await asyncio.wait_for(
                execution_service.read_events(
                    viewer.temporal, execution.temporal_workflow_id, max(after, stored_up_to)
                ),
                execution_service.TEMPORAL_TIMEOUT_S,
            )
            items.extend(live)
    events = [public_event(execution.id, i) for i in items]
    next_seq = items[-1].seq if items else after
    return ok(EventPage.model_validate({"items": events, "next": next_seq}))


@router.websocket("/ws/{execution_id}")
async def watch_execution(websocket: WebSocket, execution_id: int) -> None:
    """Every event after ``after`` as one JSON message each; closes 1000 after the last.
    A viewer's credential (header or ``?ticket=``) is checked before anything is sent:
    4401 without one, 4404 for an execution of another workspace (or none)."""
    _log_with(execution_id)  # uvicorn's line for the socket included
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
        await _stream(websocket, execution, int(raw_after))


async def _stream(websocket: WebSocket, execution: Execution, after: int) -> None:
    app = websocket.app
    hub: EventHub = app.state.event_hub

    async def send_all() -> None:
        async for text in hub.watch(execution, after):
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
