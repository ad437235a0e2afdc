"""What Temporal reports about a run it cannot advance (the execution's temporal.problems).

Our own errors never leave a run stuck: the workflow fails the execution with a
message. What remains is for an operator: a workflow task that keeps failing,
typically a deploy that changed workflow code under runs in flight
(non-determinism). Temporal says so in two places, both read here:

- the pending workflow task's ``attempt`` in ``describe`` (above 1: it failed
  that many times), with the last failure's message from the history;
- the ``TemporalReportedProblems`` search attribute that the server sets after a
  few consecutive failures, which visibility queries can filter on: the list's
  ``problems=true`` filter and ``/health`` count runs with it.
"""

from __future__ import annotations

import asyncio

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.service import RPCError

from infra.logging import get_logger
from infra.temporal import EXECUTION_ID_ATTR

log = get_logger("keel.problems")

REPORTED_PROBLEMS_ATTR = "TemporalReportedProblems"
# Workflow task attempts after which a run counts as stuck: one failure can be a
# worker that died mid-task; two in a row is a pattern.
STUCK_AFTER_ATTEMPTS = 3
TIMEOUT_S = 3.0
# Runs Temporal reports as unable to advance (visibility query).
PROBLEMS_QUERY = f'ExecutionStatus = "Running" AND {REPORTED_PROBLEMS_ATTR} IS NOT NULL'
MAX_LISTED = 1000


async def reported_problems(client: Client, description: WorkflowExecutionDescription) -> list[str]:
    """Temporal's own account of why this run does not advance; [] when nothing is wrong."""
    raw = description.raw_description
    attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
    reported = [str(v) for v in description.search_attributes.get(REPORTED_PROBLEMS_ATTR, [])]
    if attempt < STUCK_AFTER_ATTEMPTS and not reported:
        return []
    problem = (
        f"a workflow task has failed {max(attempt - 1, 1)} times in a row and Temporal "
        "keeps retrying it; the run cannot advance until an operator fixes the worker "
        "(for example, a deploy that changed workflow code under runs in flight) or "
        "resets the run"
    )
    if reported:
        problem += f" [{', '.join(reported)}]"
    last = await _last_task_failure(client, description)
    if last:
        problem += f": {last}"
    return [problem]


async def _last_task_failure(
    client: Client, description: WorkflowExecutionDescription
) -> str | None:
    """The message of the run's most recent workflow task failure, if the history has one."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=description.id, run_id=description.run_id),
        maximum_page_size=50,
    )
    try:
        response = await asyncio.wait_for(
            client.workflow_service.get_workflow_execution_history_reverse(request), TIMEOUT_S
        )
    except (RPCError, TimeoutError) as exc:
        log.warning(
            "could not read the run's history",
            workflow_id=description.id,
            error=str(exc) or type(exc).__name__,
        )
        return None
    for event in response.history.events:
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            message = event.workflow_task_failed_event_attributes.failure.message
            return message.splitlines()[0][:500] if message else None
    return None


async def execution_ids_with_problems(client: Client, workflow_id_prefix: str) -> set[int]:
    """The Keel executions whose current Temporal run Temporal reports as stuck."""
    query = f'{PROBLEMS_QUERY} AND WorkflowId STARTS_WITH "{workflow_id_prefix}-"'
    found: set[int] = set()
    async for run in client.list_workflows(query, limit=MAX_LISTED):
        execution_id = run.typed_search_attributes.get(EXECUTION_ID_ATTR)
        if execution_id is not None:
            found.add(int(execution_id))
    return found


async def count_runs_with_problems(client: Client, workflow_id_prefix: str) -> int:
    """How many runs Temporal reports as unable to advance (0 if it cannot say now)."""
    query = f'{PROBLEMS_QUERY} AND WorkflowId STARTS_WITH "{workflow_id_prefix}-"'
    try:
        counted = await asyncio.wait_for(client.count_workflows(query), TIMEOUT_S)
    except (RPCError, TimeoutError) as exc:
        log.warning("could not count runs with problems", error=str(exc) or type(exc).__name__)
        return 0
    return counted.count
