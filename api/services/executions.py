"""Starting runs and keeping the API's view of them true to Temporal.

The database is the record; Temporal is the truth while a run is open. For an
open run, ``refresh`` folds any new events from the run's stream into the
record, and if Temporal says the run closed without telling us (an operator
terminated it, or it timed out), it writes the terminal state itself, with a
closing event, so watchers and GETs agree on how it ended. Every write here
follows the writers' protocol of ``infra.execution_store`` (read the stream,
lock the row, append), so the worker's ``sync_execution`` and these never race.

A run may continue as new (a long history): one execution is then a chain of
Temporal runs under one workflow id. Everything here addresses the workflow id
without a run id, which Temporal resolves to the chain's current run, and
``temporal_run_id`` is kept pointing at it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.interfaces import ORMOption
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import Conflict, ServiceUnavailable, TooManyRequests, Unprocessable
from api.resources import workflow_version
from api.services.problems import reported_problems
from infra.execution_store import append, last_seq, lock
from infra.logging import get_logger
from infra.metrics import EXECUTIONS_STARTED, count_finished, count_recorded
from infra.models import Agent, Execution, ExecutionEvent, Tool, WorkflowVersion
from infra.settings import Settings
from infra.streams import read_stream
from infra.temporal import (
    EXECUTION_ID_ATTR,
    WORKFLOW_ID_ATTR,
    WORKFLOW_VERSION_ATTR,
    WORKSPACE_ID_ATTR,
    temporal_workflow_id,
)
from infra.tools.sealing import masked_config
from workflows.contracts import AgentSpec, ExecutionInput, HumanResponse, MemoEntry, ToolSpec
from workflows.definition import Definition
from workflows.events import (
    EVENTS_TOPIC,
    OPERATOR,
    TERMINAL_EVENTS,
    Event,
    EventType,
    ExecutionFailed,
    RecordedEvent,
    event,
    recorded,
)
from workflows.execution import ExecutionWorkflow
from workflows.memo import downstream, seed_from_events
from workflows.record import completed_durations_s, fold
from workflows.status import ACTIVE, FINISHED, ExecutionStatus

log = get_logger("keel.executions")

# What a run snapshots by id: the agents and tools its workflow uses.
Referenced = TypeVar("Referenced", Agent, Tool)

TEMPORAL_TIMEOUT_S = 3.0
# How long an answer to a human node may wait, in all, for the run's worker to take it
# before the client is told (503) to send it again. Longer than the 10 s a workflow task
# waits on a lost worker's sticky queue before any worker may take it, so an answer to a
# run whose worker just died is mostly still taken within the one request; well under
# the 30 s clients commonly wait for an answer.
ANSWER_TIMEOUT = timedelta(seconds=15)
RETRY_AFTER_CAP_S = 5  # what a 429 for the running-executions cap suggests

# How a run that closed without a terminal event of its own is recorded.
CLOSED_WITHOUT_EVENT = {
    WorkflowExecutionStatus.TERMINATED: (
        EventType.EXECUTION_FAILED,
        "terminated by an operator in Temporal",
    ),
    WorkflowExecutionStatus.TIMED_OUT: (EventType.EXECUTION_FAILED, "timed out in Temporal"),
    WorkflowExecutionStatus.FAILED: (EventType.EXECUTION_FAILED, "the run failed in Temporal"),
    WorkflowExecutionStatus.CANCELED: (EventType.EXECUTION_CANCELLED, "cancelled in Temporal"),
    WorkflowExecutionStatus.COMPLETED: (
        EventType.EXECUTION_FAILED,
        "the run completed without recording its result",
    ),
}


async def snapshot(
    session: AsyncSession, definition: Definition
) -> tuple[dict[str, AgentSpec], dict[str, ToolSpec]]:
    """The agents and tools a run uses, as they are now: edits later do not change it.
    Secrets stay out (the activities read them by id): no API key, sealed config values
    masked, so neither the workflow input nor Temporal's history carries one."""
    agents = {
        str(a.id): AgentSpec(
            id=a.id,
            name=a.name,
            provider=a.provider,
            model=a.model,
            base_url=a.base_url,
            system_prompt=a.system_prompt,
            temperature=a.temperature,
            max_tokens=a.max_tokens,
            max_iterations=a.max_iterations,
            tool_ids=a.tool_ids,
            metadata=a.metadata_,
        )
        for a in await _by_id(session, Agent, definition.agent_ids(), joinedload(Agent.tool_links))
    }
    tool_ids = definition.tool_ids() | {t for a in agents.values() for t in a.tool_ids}
    tools = {
        str(t.id): ToolSpec.model_validate(
            {
                "id": t.id,
                "name": t.name,
                "description": t.description,
                "type": t.type,
                "input_schema": t.input_schema,
                "config": masked_config(t.config),
            }
        )
        for t in await _by_id(session, Tool, tool_ids)
    }
    return agents, tools


async def _by_id(
    session: AsyncSession, model: type[Referenced], ids: Collection[int], *options: ORMOption
) -> Sequence[Referenced]:
    """The rows with these ids; no query when there are none (a workflow without tools)."""
    if not ids:
        return ()
    query = select(model).where(model.id.in_(ids)).options(*options)
    return (await session.scalars(query)).unique().all()


def row_to_event(row: ExecutionEvent) -> RecordedEvent:
    """A stored event as it was published."""
    return RecordedEvent(
        seq=row.seq,
        type=EventType(row.type),
        node_id=row.node_id,
        ts=row.ts.isoformat(),
        data=row.data,
    )


async def read_events(
    client: Client, temporal_workflow_id: str, after: int, run_id: str | None = None
) -> list[RecordedEvent]:
    """The run's events with ``seq > after``, as retained in its stream now."""
    items = await read_stream(
        client, temporal_workflow_id, EVENTS_TOPIC, after, Event, run_id=run_id
    )
    return [recorded(item.offset, item.data) for item in items]


async def refuse_beyond_cap(
    session: AsyncSession, settings: Settings, execution: Execution
) -> None:
    """429 while the workspace has ``max_running_executions`` runs started and not
    finished. Refused, not queued: the execution stays pending and the caller starts
    it later (POST /Execution/{id}/start), so no hidden queue decides the order or
    holds runs nobody watches any more. One indexed count per start, none per read."""
    cap = settings.max_running_executions
    if cap <= 0:
        return
    running = await session.scalar(
        select(func.count())
        .select_from(Execution)
        .where(
            Execution.workspace_id == execution.workspace_id,
            Execution.status.in_([ExecutionStatus.RUNNING, ExecutionStatus.WAITING]),
        )
    )
    if (running or 0) >= cap:
        raise TooManyRequests(
            f"this workspace already has {running} executions running (the cap is {cap}); "
            f"execution {execution.id} stays pending: start it with "
            f"POST /api/v1/Execution/{execution.id}/start once one finishes",
            RETRY_AFTER_CAP_S,
        )


async def start(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    execution: Execution,
    version: WorkflowVersion | None = None,
) -> None:
    """Start the run in Temporal and commit that it started. A run the worker already recorded
    (a fast one) keeps what it recorded: only a pending execution becomes running.
    ``version`` is the execution's workflow version when the caller has read it."""
    if execution.status != ExecutionStatus.PENDING:
        raise Conflict(
            f"execution {execution.id} is {execution.status}; "
            "only a pending execution can be started"
        )
    await refuse_beyond_cap(session, settings, execution)
    if version is None:
        version = await pinned_version(session, execution)
    definition = Definition.model_validate(version.definition)
    agents, tools = await snapshot(session, definition)
    run_key = temporal_workflow_id(settings, execution.id)
    params = ExecutionInput(
        execution_id=execution.id,
        workspace_id=execution.workspace_id,
        workflow_id=execution.workflow_id,
        workflow_version=execution.workflow_version,
        definition=version.definition,
        input=execution.input,
        agents=agents,
        tools=tools,
        memo=await rerun_memo(session, execution, definition),
        max_history_events=settings.history_events_per_run,
        record_in_task=True,
    )
    try:
        handle = await client.start_workflow(
            ExecutionWorkflow.run,
            params,
            id=run_key,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(EXECUTION_ID_ATTR, execution.id),
                    SearchAttributePair(WORKFLOW_ID_ATTR, execution.workflow_id),
                    SearchAttributePair(WORKFLOW_VERSION_ATTR, execution.workflow_version),
                    SearchAttributePair(WORKSPACE_ID_ATTR, str(execution.workspace_id)),
                ]
            ),
            static_summary=f"Keel execution {execution.id}: workflow {execution.workflow_id} "
            f"v{execution.workflow_version}",
        )
    except WorkflowAlreadyStartedError as exc:
        raise Conflict(f"execution {execution.id} was already started") from exc
    except RPCError as exc:
        raise ServiceUnavailable(
            f"Temporal at {settings.temporal_address} did not accept the run ({exc.message}); "
            "the execution stays pending, start it again later"
        ) from exc
    EXECUTIONS_STARTED.inc()
    await _record_start(session, execution.id, run_key, handle.result_run_id)


async def _record_start(
    session: AsyncSession, execution_id: int, run_key: str, run_id: str | None
) -> None:
    """Store the run's Temporal ids in one statement and commit; the session's execution
    is then as it now is. A run the worker already recorded (a fast one) keeps what it
    recorded: only a pending execution becomes running. Like ``lock``, the write starts a
    new transaction, so SQLite never has to turn a read transaction into a write one.
    SQLite returns the row from the update itself; elsewhere it is read after the
    commit (MariaDB has no ``UPDATE ... RETURNING``)."""
    await session.rollback()
    record = (
        update(Execution)
        .where(Execution.id == execution_id)
        .values(
            temporal_workflow_id=run_key,
            temporal_run_id=run_id,
            status=case(
                (Execution.status == ExecutionStatus.PENDING, ExecutionStatus.RUNNING),
                else_=Execution.status,
            ),
            started_at=func.coalesce(
                Execution.started_at, literal(datetime.now(UTC), Execution.started_at.type)
            ),
        )
    )
    if session.get_bind().dialect.update_returning:
        await session.scalar(record.returning(Execution).execution_options(populate_existing=True))
        await session.commit()
        return
    await session.execute(record.execution_options(synchronize_session=False))
    await session.commit()
    await session.scalar(
        select(Execution)
        .where(Execution.id == execution_id)
        .execution_options(populate_existing=True)
    )


async def pinned_version(session: AsyncSession, execution: Execution) -> WorkflowVersion:
    """The workflow version the execution runs; 409 if it is gone."""
    version = await workflow_version(session, execution.workflow_id, execution.workflow_version)
    if version is None:
        raise Conflict(
            f"workflow {execution.workflow_id} version {execution.workflow_version} "
            "no longer exists"
        )
    return version


async def rerun_memo(
    session: AsyncSession, execution: Execution, definition: Definition
) -> dict[str, MemoEntry]:
    """A rerun starts with its parent's completed node visits, less the node it reruns
    from and everything downstream of it; a first run starts with none."""
    if execution.parent_execution_id is None:
        return {}
    rerun = (
        downstream(definition, execution.rerun_from_node) if execution.rerun_from_node else set()
    )
    rows = await session.scalars(
        select(ExecutionEvent)
        .where(
            ExecutionEvent.execution_id == execution.parent_execution_id,
            ExecutionEvent.type == EventType.NODE_COMPLETED.value,
        )
        .order_by(ExecutionEvent.seq)
    )
    return seed_from_events(execution.parent_execution_id, map(row_to_event, rows), rerun)


async def create_rerun(
    session: AsyncSession,
    parent: Execution,
    version: int | None,
    input: dict[str, Any] | None,
    from_node: str | None,
) -> tuple[Execution, WorkflowVersion]:
    """A new pending execution that reruns ``parent`` (the caller starts it), and the
    workflow version it runs."""
    if parent.status in ACTIVE:
        raise Conflict(
            f"execution {parent.id} is still {parent.status}; rerun it once it "
            "has finished, or cancel it first"
        )
    number = version or parent.workflow_version
    pinned = await workflow_version(session, parent.workflow_id, number)
    if pinned is None:
        raise Unprocessable(
            f"workflow {parent.workflow_id} has no version {number}",
            data=[
                {
                    "loc": ["body", "version"],
                    "msg": f"version {number} does not exist",
                    "type": "unknown_version",
                }
            ],
        )
    definition = Definition.model_validate(pinned.definition)
    if from_node is not None and from_node not in {n.id for n in definition.nodes}:
        raise Unprocessable(
            f"version {number} of workflow {parent.workflow_id} has no node {from_node!r}",
            data=[
                {
                    "loc": ["body", "from_node"],
                    "msg": f"no node {from_node!r} in version {number}",
                    "type": "unknown_node",
                }
            ],
        )
    execution = Execution(
        workspace_id=parent.workspace_id,
        workflow_id=parent.workflow_id,
        workflow_version=number,
        status=ExecutionStatus.PENDING,
        input=parent.input if input is None else input,
        parent_execution_id=parent.id,
        rerun_from_node=from_node,
    )
    session.add(execution)
    await session.flush()
    return execution, pinned


async def cancel_pending(session: AsyncSession, execution: Execution, by: dict[str, Any]) -> bool:
    """A run that never started ends here, with the same closing event as any other
    (``by``: who cancelled); the caller commits. False if it was started meanwhile:
    cancel it in Temporal."""
    locked = await lock(session, execution.id)
    if locked is None or locked.temporal_workflow_id or locked.status not in ACTIVE:
        return False
    await _close(
        session,
        locked,
        event(EventType.EXECUTION_CANCELLED, datetime.now(UTC).isoformat(), None, {"by": by}),
    )
    return True


def _handle(client: Client, execution: Execution) -> WorkflowHandle[Any, Any]:
    # No run id: the chain's current run, wherever continue-as-new has got to.
    return client.get_workflow_handle_for(
        ExecutionWorkflow.run, execution.temporal_workflow_id or ""
    )


async def cancel(
    session: AsyncSession, client: Client, execution: Execution, by: dict[str, Any]
) -> bool:
    """Cancel an open execution (``by``: who asked). One that never started ends here; a
    run is asked to cancel in Temporal, and True says so (it ends as cancelled soon)."""
    await refresh(session, client, execution)
    if execution.status in FINISHED:
        raise Conflict(
            f"execution {execution.id} already {execution.status}; there is nothing to cancel"
        )
    if execution.temporal_workflow_id is None:
        cancelled = await cancel_pending(session, execution, by)
        await session.commit()
        if cancelled or execution.temporal_workflow_id is None:
            return False
    handle = _handle(client, execution)
    try:
        # Who asked, then the cancel itself (the run's execution.cancelled says data.by).
        with contextlib.suppress(RPCError):
            await handle.signal(ExecutionWorkflow.cancel_requested, by)
        await handle.cancel()
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not accept the cancel: {exc.message}") from exc
    return True


async def respond(
    session: AsyncSession, client: Client, execution: Execution, response: HumanResponse
) -> None:
    """Give a waiting human node its answer (a workflow update, so a refused answer is a
    409 with the reason), then bring the record up to date."""
    if execution.status in FINISHED or execution.temporal_workflow_id is None:
        raise Conflict(
            f"execution {execution.id} is {execution.status}; "
            f"node {response.node_id!r} is not waiting"
        )
    try:
        # The SDK's rpc_timeout bounds each request of the update (it may take several):
        # the whole wait is bounded here.
        async with asyncio.timeout(ANSWER_TIMEOUT.total_seconds()):
            # By reference to the workflow's update; the SDK types an async update's
            # result as its coroutine, hence the ignore.
            await _handle(client, execution).execute_update(  # type: ignore[unused-coroutine]
                ExecutionWorkflow.respond, response, rpc_timeout=ANSWER_TIMEOUT
            )
    except WorkflowUpdateFailedError as exc:  # the run refused it: the node is not waiting
        raise Conflict(str(exc.cause) if exc.cause else str(exc)) from exc
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the run has ended
            raise Conflict(
                f"execution {execution.id} is not accepting responses: {exc.message}"
            ) from exc
        # Temporal or the run's worker is busy or restarting (say, the workflow task is
        # being retried after a worker was lost): the answer was not taken, send it again.
        raise ServiceUnavailable(
            f"execution {execution.id} could not take the answer just now "
            f"({exc.message}); send it again"
        ) from exc
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"execution {execution.id} did not take the answer in time (no worker at hand?); "
            "send it again: an answer already taken is refused with 409"
        ) from exc
    await refresh(session, client, execution)


async def _close(session: AsyncSession, locked: Execution, closing: Event) -> None:
    """Record the closing event of a run that ended without one (under ``lock``)."""
    seq = await last_seq(session, locked.id, locking=True) + 1
    before = locked.status
    await append(session, locked, [RecordedEvent(seq=seq, **closing.model_dump())], fold)
    count_finished(before, locked.status, FINISHED)


async def has_terminal_event(session: AsyncSession, execution_id: int) -> bool:
    found = await session.scalar(
        select(ExecutionEvent.id)
        .where(
            ExecutionEvent.execution_id == execution_id,
            ExecutionEvent.type.in_([str(t) for t in TERMINAL_EVENTS]),
        )
        .limit(1)
    )
    return found is not None


async def refresh(session: AsyncSession, client: Client, execution: Execution) -> list[str]:
    """Bring an open run's record up to date with Temporal; commits what it learns.
    Returns what Temporal reports about a run it cannot advance (temporal.problems)."""
    if execution.status not in ACTIVE or not execution.temporal_workflow_id:
        return []
    execution_id = execution.id
    problems: list[str] = []
    try:
        problems = await _refresh(session, client, execution)
        await session.commit()
    except (RPCError, TimeoutError) as exc:
        # No answer from Temporal (or no worker to answer a query): the record stands.
        await session.rollback()
        log.warning(
            "could not refresh execution from Temporal",
            execution_id=execution_id,
            error=str(exc) or type(exc).__name__,
        )
    await session.refresh(execution)
    return problems


async def _refresh(session: AsyncSession, client: Client, execution: Execution) -> list[str]:
    run_key = execution.temporal_workflow_id or ""
    # No run id: the chain's current run (the run may have continued as new).
    handle = client.get_workflow_handle(run_key)
    description = await asyncio.wait_for(handle.describe(), TEMPORAL_TIMEOUT_S)
    closed = description.status not in (None, WorkflowExecutionStatus.RUNNING)
    problems = await reported_problems(client, description)
    events: list[RecordedEvent] = []
    try:
        events = await asyncio.wait_for(
            read_events(client, run_key, await last_seq(session, execution.id)),
            TEMPORAL_TIMEOUT_S,
        )
    except Exception as exc:
        # Reading the stream needs a worker that can run the workflow; without one we
        # still know how it closed, or what is wrong with it.
        if not closed and not problems:
            raise
        log.warning(
            "could not read the events of a closed run",
            execution_id=execution.id,
            error=str(exc) or type(exc).__name__,
        )
    locked = await lock(session, execution.id)
    if locked is None:
        return problems
    if description.run_id and description.run_id != locked.temporal_run_id:
        locked.temporal_run_id = description.run_id
    before = locked.status
    added = await append(session, locked, events, fold)
    stored = events[len(events) - added :] if added else []
    count_recorded(completed_durations_s(stored), before, locked.status, FINISHED)
    if closed and locked.status in ACTIVE and description.status is not None:
        # Temporal says the run is over and the record (under the lock, so with
        # everything the worker wrote) does not: record how it ended.
        kind, reason = CLOSED_WITHOUT_EVENT[description.status]
        closed_at = (description.close_time or datetime.now(UTC)).isoformat()
        await _close(
            session,
            locked,
            event(
                kind,
                closed_at,
                None,
                {"by": OPERATOR}
                if kind == EventType.EXECUTION_CANCELLED
                else ExecutionFailed(error=reason),
            ),
        )
        log.info(
            "recorded a run that closed in Temporal",
            execution_id=execution.id,
            temporal_status=description.status.name,
        )
    return problems
