"""Starting runs and keeping the API's view of them true to Temporal.

The database is the record; Temporal is the truth while a run is open. For an
open run, ``refresh`` folds any new events from the run's stream into the
record, and if Temporal says the run closed without telling us (an operator
terminated it, or it timed out), it writes the terminal state itself, with a
closing event, so watchers and GETs agree on how it ended.

A run may continue as new (a long history): one execution is then a chain of
Temporal runs under one workflow id. Everything here addresses the workflow id
without a run id, which Temporal resolves to the chain's current run, and
``temporal_run_id`` is kept pointing at it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.errors import Conflict, ServiceUnavailable, Unprocessable
from api.services.problems import reported_problems
from infra.execution_store import ACTIVE, apply_events, last_seq
from infra.logging import get_logger
from infra.models import Agent, Execution, ExecutionEvent, Tool, WorkflowVersion
from infra.settings import Settings
from infra.streams import read_events
from infra.temporal import (
    EXECUTION_ID_ATTR,
    WORKFLOW_ID_ATTR,
    WORKFLOW_VERSION_ATTR,
    temporal_workflow_id,
)
from workflows.contracts import AgentSpec, ExecutionInput, MemoEntry, ToolSpec
from workflows.definition import Definition
from workflows.events import TERMINAL_EVENTS, EventType, event
from workflows.memo import downstream, seed_from_events

log = get_logger("keel.executions")
TEMPORAL_TIMEOUT_S = 3.0

# How a run that closed without a terminal event of its own is recorded.
CLOSED_WITHOUT_EVENT = {
    WorkflowExecutionStatus.TERMINATED: (EventType.EXECUTION_FAILED,
                                         "terminated by an operator in Temporal"),
    WorkflowExecutionStatus.TIMED_OUT: (EventType.EXECUTION_FAILED, "timed out in Temporal"),
    WorkflowExecutionStatus.FAILED: (EventType.EXECUTION_FAILED, "the run failed in Temporal"),
    WorkflowExecutionStatus.CANCELED: (EventType.EXECUTION_CANCELLED, "cancelled in Temporal"),
    WorkflowExecutionStatus.COMPLETED: (EventType.EXECUTION_FAILED,
                                        "the run completed without recording its result"),
}


async def snapshot(session: AsyncSession, definition: Definition
                   ) -> tuple[dict[str, AgentSpec], dict[str, ToolSpec]]:
    """The agents and tools a run uses, as they are now: edits later do not change it."""
    agents = {
        str(a.id): AgentSpec(
            id=a.id, name=a.name, provider=a.provider, model=a.model, base_url=a.base_url,
            api_key_encrypted=a.api_key_encrypted, system_prompt=a.system_prompt,
            temperature=a.temperature, max_tokens=a.max_tokens, max_iterations=a.max_iterations,
            tool_ids=a.tool_ids, metadata=a.metadata_,
        )
        for a in await session.scalars(select(Agent).where(Agent.id.in_(definition.agent_ids())))
    }
    tool_ids = definition.tool_ids() | {t for a in agents.values() for t in a.tool_ids}
    tools = {
        str(t.id): ToolSpec.model_validate({
            "id": t.id, "name": t.name, "description": t.description, "type": t.type,
            "input_schema": t.input_schema, "config": t.config,
        })
        for t in await session.scalars(select(Tool).where(Tool.id.in_(tool_ids)))
    }
    return agents, tools


async def start(session: AsyncSession, client: Client, settings: Settings,
                execution: Execution) -> None:
    if execution.status != "pending":
        raise Conflict(f"execution {execution.id} is {execution.status}; "
                       "only a pending execution can be started")
    version = await session.scalar(select(WorkflowVersion).where(
        WorkflowVersion.workflow_id == execution.workflow_id,
        WorkflowVersion.version == execution.workflow_version,
    ))
    if version is None:
        raise Conflict(f"workflow {execution.workflow_id} version {execution.workflow_version} "
                       "no longer exists")
    definition = Definition.model_validate(version.definition)
    agents, tools = await snapshot(session, definition)
    workflow_id = temporal_workflow_id(settings, execution.id)
    params = ExecutionInput(
        execution_id=execution.id, workspace_id=execution.workspace_id,
        workflow_id=execution.workflow_id,
        workflow_version=execution.workflow_version, definition=version.definition,
        input=execution.input, agents=agents, tools=tools,
        memo=await rerun_memo(session, execution, definition),
        max_history_events=settings.history_events_per_run,
    )
    try:
        handle = await client.start_workflow(
            "ExecutionWorkflow",
            params,
            id=workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(EXECUTION_ID_ATTR, execution.id),
                SearchAttributePair(WORKFLOW_ID_ATTR, execution.workflow_id),
                SearchAttributePair(WORKFLOW_VERSION_ATTR, execution.workflow_version),
            ]),
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
    execution.temporal_workflow_id = workflow_id
    execution.temporal_run_id = handle.result_run_id
    execution.status = "running"
    execution.started_at = datetime.now(UTC)


async def rerun_memo(session: AsyncSession, execution: Execution, definition: Definition
                     ) -> dict[str, MemoEntry]:
    """A rerun starts with its parent's completed node visits, less the node it reruns
    from and everything downstream of it; a first run starts with none."""
    if execution.parent_execution_id is None:
        return {}
    rerun = downstream(definition, execution.rerun_from_node) \
        if execution.rerun_from_node else set()
    rows = await session.scalars(select(ExecutionEvent).where(
        ExecutionEvent.execution_id == execution.parent_execution_id,
        ExecutionEvent.type == str(EventType.NODE_COMPLETED),
    ).order_by(ExecutionEvent.seq))
    return seed_from_events(execution.parent_execution_id,
                            ({"type": r.type, "node_id": r.node_id, "data": r.data} for r in rows),
                            rerun)


async def create_rerun(session: AsyncSession, parent: Execution, version: int | None,
                       input: dict[str, Any] | None, from_node: str | None) -> Execution:
    """A new pending execution that reruns ``parent`` (the caller starts it)."""
    if parent.status in ACTIVE:
        raise Conflict(f"execution {parent.id} is still {parent.status}; rerun it once it "
                       "has finished, or cancel it first")
    number = version or parent.workflow_version
    pinned = await session.scalar(select(WorkflowVersion).where(
        WorkflowVersion.workflow_id == parent.workflow_id, WorkflowVersion.version == number))
    if pinned is None:
        raise Unprocessable(f"workflow {parent.workflow_id} has no version {number}", data=[
            {"loc": ["body", "version"], "msg": f"version {number} does not exist",
             "type": "unknown_version"}])
    definition = Definition.model_validate(pinned.definition)
    if from_node is not None and from_node not in {n.id for n in definition.nodes}:
        raise Unprocessable(
            f"version {number} of workflow {parent.workflow_id} has no node {from_node!r}",
            data=[{"loc": ["body", "from_node"], "msg": f"no node {from_node!r} in version "
                   f"{number}", "type": "unknown_node"}])
    execution = Execution(
        workspace_id=parent.workspace_id, workflow_id=parent.workflow_id,
        workflow_version=number, status="pending",
        input=parent.input if input is None else input,
        parent_execution_id=parent.id, rerun_from_node=from_node,
    )
    session.add(execution)
    await session.flush()
    return execution


async def cancel_pending(session: AsyncSession, execution: Execution) -> None:
    """A run that never started ends here, with the same closing event as any other."""
    await apply_events(session, execution, [
        {"seq": 1, **event(EventType.EXECUTION_CANCELLED, datetime.now(UTC).isoformat())}
    ])


async def has_terminal_event(session: AsyncSession, execution_id: int) -> bool:
    found = await session.scalar(select(ExecutionEvent.id).where(
        ExecutionEvent.execution_id == execution_id,
        ExecutionEvent.type.in_([str(t) for t in TERMINAL_EVENTS]),
    ).limit(1))
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
    except IntegrityError:
        # Another process folded the same events first; theirs is as good as ours.
        await session.rollback()
    except (RPCError, TimeoutError) as exc:
        # No answer from Temporal (or no worker to answer a query): the record stands.
        await session.rollback()
        log.warning("could not refresh execution from Temporal", execution_id=execution_id,
                    error=str(exc) or type(exc).__name__)
    await session.refresh(execution)
    return problems


async def _refresh(session: AsyncSession, client: Client, execution: Execution) -> list[str]:
    workflow_id = execution.temporal_workflow_id or ""
    # No run id: the chain's current run (the run may have continued as new).
    handle = client.get_workflow_handle(workflow_id)
    description = await asyncio.wait_for(handle.describe(), TEMPORAL_TIMEOUT_S)
    if description.run_id and description.run_id != execution.temporal_run_id:
        execution.temporal_run_id = description.run_id
    closed = description.status not in (None, WorkflowExecutionStatus.RUNNING)
    problems = await reported_problems(client, description)
    try:
        events = await asyncio.wait_for(
            read_events(client, workflow_id, await last_seq(session, execution.id)),
            TEMPORAL_TIMEOUT_S,
        )
        await apply_events(session, execution, events)
    except Exception as exc:
        # Reading the stream needs a worker that can run the workflow; without one we
        # still know how it closed, or what is wrong with it.
        if not closed and not problems:
            raise
        log.warning("could not read the events of a closed run", execution_id=execution.id,
                    error=str(exc) or type(exc).__name__)
    if closed and execution.status in ACTIVE and description.status is not None:
        kind, reason = CLOSED_WITHOUT_EVENT[description.status]
        closed_at = (description.close_time or datetime.now(UTC)).isoformat()
        data: dict[str, Any] = {} if kind == EventType.EXECUTION_CANCELLED else {"error": reason}
        await apply_events(session, execution, [
            {"seq": await last_seq(session, execution.id) + 1,
             **event(kind, closed_at, None, data)}
        ])
        log.info("recorded a run that closed in Temporal", execution_id=execution.id,
                 temporal_status=description.status.name)
    return problems
