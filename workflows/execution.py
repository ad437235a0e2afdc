"""ExecutionWorkflow: one Temporal workflow per Keel execution.

Why an interpreter and not the ``temporalio-langgraph`` plugin: the plugin turns
graphs registered when the worker starts into activities named after their
nodes. Keel's graphs are user definitions that arrive at run time as workflow
input, so no node of theirs is known to the worker in advance. Instead, the
pinned, published definition is compiled into a LangGraph ``StateGraph``
(``workflows.graph``: once per definition in a worker process, shared by its runs)
whose nodes hand over to the run, which calls a small, fixed set of generic
activities (model call, tool call). LangGraph
gives us the graph semantics (parallel supersteps, join barriers, conditional
routing); Temporal gives durability, retries, timeouts and cancellation.

Determinism rules this module keeps (see tests/workflows/test_replay.py):
- every LangGraph node and router is ``async`` (a sync one would go through an
  executor, which the workflow event loop does not have);
- every activity gets an explicit ``activity_id`` derived from the node id and
  visit, so a change in scheduling order fails replay instead of swapping results;
- no LangGraph retry, timeout or checkpointer features: Temporal owns those (the one
  checkpoint, ``workflows.handover``, only carries the graph into the next run);
- time is ``workflow.now()``;
- it runs outside Temporal's sandbox in ``keel worker`` (worker.main.workflow_runner);
  the tests run it inside, with every module of ours checked (``checking_runner``).

Loops and long runs (workflows.loops, workflows.handover): LangGraph's step limit
comes from the definition's loop bounds. Once the history is long, the node that
notices asks LangGraph to drain: the graph stops before its next superstep and
hands over its checkpoint (``workflows.handover``); the run continues as new with
that position, the visit counts and the event stream's state, and the new run
resumes the graph from there. Nothing is replayed, so a call costs the same in
the 10th run of a chain as in the first. A rerun's memo (workflows.memo) answers
the parent's visits that still hold without running them.

No run stays ``running`` because of our code: any exception out of the graph that is
neither a node failure nor a cancel is caught in ``run`` and fails the execution with
its message (an explicit catch rather than ``workflow_failure_exception_types``, so the
run's record and watchers get ``execution.failed`` with the reason, like any other
failure). Non-determinism is not caught: that is for an operator (temporal.problems).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from langgraph.errors import GraphDrained
from langgraph.graph import END
from langgraph.runtime import RunControl
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    RetryState,
    TimeoutType,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeout

from workflows.contracts import (
    ExecutionInput,
    ExecutionResult,
    HumanResponse,
    LlmCallInput,
    MemoEntry,
    StreamItem,
    SyncInput,
    ToolCallInput,
    ToolCallResult,
    ToolSpec,
    call_tool,
    llm_call,
    sync_execution,
)
from workflows.definition import (
    AgentNode,
    ConditionNode,
    Definition,
    HumanNode,
    RetrySpec,
    ToolNode,
)
from workflows.errors import NON_RETRYABLE, ErrorType
from workflows.events import (
    EVENTS_TOPIC,
    OPERATOR,
    Event,
    EventType,
    ExecutionCompleted,
    ExecutionFailed,
    NodeCompleted,
    NodeFailed,
    event,
)
from workflows.graph import CHECKPOINTER, RUN, RunState, compiled
from workflows.handover import THREAD, Handover
from workflows.loops import step_limit
from workflows.memo import MemoNode, memo_key, still_to_come
from workflows.status import ExecutionStatus
from workflows.templates import matches, render_text, render_value

DEFAULT_AGENT_TIMEOUT = timedelta(minutes=5)
DEFAULT_TOOL_TIMEOUT = timedelta(minutes=2)
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
SYNC_TIMEOUT = timedelta(seconds=60)
SYNC_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=[ErrorType.RECORD_BEHIND.value],
)
HAND_OVER = "continue as new"  # the reason given to LangGraph's drain
# The patch that records the run with a local activity given the events (in the workflow
# task that reached the milestone) instead of an activity that reads the stream back.
RECORD_IN_TASK = "record-in-workflow-task"
# A failed local activity reaches the workflow as its own error (an ApplicationError),
# not wrapped in an ActivityError as an ordinary activity's is. Before this patch the
# record's fallback caught only the latter, so a record found behind failed the run.
RECORD_FALLBACK = "record-fallback-on-local-failure"
# A worker that dies mid-activity (SIGKILL, a lost host, a CPU starved past the heartbeat
# timeout) shows as a heartbeat timeout, which Temporal's retry policy counts like the
# node's own errors. The workflow schedules the activity again when its last attempt was
# lost that way, so lost workers do not use up a node's attempts; bounded, so a worker
# that dies on this very input (out of memory, say) still fails the node.
LOST_WORKER_RESCHEDULES = 10
LOST_WORKER_PATCH = "reschedule-after-lost-worker"


class NodeFailure(Exception):
    """A node failed for good: the execution fails with this message."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


def _retry_policy(spec: RetrySpec | None, *, at_most_once: bool = False) -> RetryPolicy:
    spec = spec or RetrySpec()
    return RetryPolicy(
        initial_interval=timedelta(seconds=spec.initial_interval_s),
        backoff_coefficient=spec.backoff,
        maximum_interval=timedelta(seconds=spec.max_interval_s) if spec.max_interval_s else None,
        maximum_attempts=1 if at_most_once else spec.max_attempts,
        non_retryable_error_types=[str(error_type) for error_type in NON_RETRYABLE],
    )


def _lost_worker(err: ActivityError) -> bool:
    """The activity's last attempt ended because its worker stopped heartbeating."""
    return (
        err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
        and isinstance(err.cause, TemporalTimeout)
        and err.cause.type == TimeoutType.HEARTBEAT
    )


NodeCallInput = TypeVar("NodeCallInput", LlmCallInput, ToolCallInput)
Result = TypeVar("Result")


async def _execute_node_activity(
    activity: Callable[[NodeCallInput], Awaitable[Result]],
    arg: NodeCallInput,
    *,
    activity_id: str,
    retry_policy: RetryPolicy,
    idempotent: bool = True,
    **options: Any,
) -> Result:
    """``workflow.execute_activity``, scheduled again (as ``<activity_id>/lost-<n>``, with
    the attempts used so far) when its last attempt lost its worker; not for an
    at-most-once call, which may have been delivered."""
    lost = 0
    while True:
        try:
            return await workflow.execute_activity(
                activity,
                arg,
                activity_id=activity_id if lost == 0 else f"{activity_id}/lost-{lost}",
                retry_policy=retry_policy,
                **options,
            )
        except ActivityError as err:
            if not (
                idempotent
                and lost < LOST_WORKER_RESCHEDULES
                and _lost_worker(err)
                and workflow.patched(LOST_WORKER_PATCH)
            ):
                raise
            lost += 1
            used = arg.attempts_before + (retry_policy.maximum_attempts or 1)
            arg = arg.model_copy(update={"attempts_before": used})
            workflow.logger.warning(
                "activity %s lost its worker after %d attempts; scheduling it again",
                activity_id,
                used,
            )


def _failure(err: ActivityError, max_attempts: int) -> tuple[str, int]:
    """The root cause of an activity failure, and how many attempts were made.

    Our activities put the attempt in their failure's details; without it (a timeout,
    say) the retries ran out, unless the failure was non-retryable: then there was one.
    """
    attempts = 1 if err.retry_state == RetryState.NON_RETRYABLE_FAILURE else max_attempts
    cause: BaseException = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.details:
        detail = cause.details[0]
        if isinstance(detail, dict) and "attempt" in detail:
            attempts = int(detail["attempt"])
    # A failure's own message; str() of an ApplicationError would prefix its type.
    message = getattr(cause, "message", None) or str(cause)
    return message or type(cause).__name__, attempts


@workflow.defn(name="ExecutionWorkflow")
class ExecutionWorkflow:
    @workflow.init
    def __init__(self, params: ExecutionInput) -> None:
        self.stream = WorkflowStream(prior_state=params.stream_state)
        self.events = self.stream.topic(EVENTS_TOPIC, type=Event)
        self.params = params
        self.memo: dict[str, MemoEntry] = dict(params.memo)
        self.waiting: set[str] = set()
        self.responses: dict[str, HumanResponse] = {}
        resume = params.resume
        self.visits: dict[str, int] = defaultdict(int, resume.visits if resume else {})
        # The last agent, tool or human node that finished.
        self.last_finished: str | None = resume.last_finished if resume else None
        self.handover = Handover(resume)  # the graph's checkpoint, only ever at the end
        self.control = RunControl()  # asks LangGraph to stop between two supersteps
        self.cancelled_by: dict[str, Any] | None = None
        # The stream offset up to which the record holds the events: all that a previous
        # run of the chain published was recorded before it continued as new.
        prior = params.stream_state
        self.recorded_up_to = prior.base_offset + len(prior.log) if prior else 0

    # -- operator and client interaction ------------------------------------------------

    @workflow.signal(name="cancel_requested")
    def cancel_requested(self, by: dict[str, Any]) -> None:
        """Who asks to cancel (POST /Execution/{id}/cancel sends it just before the cancel);
        a cancel without it was done in Temporal directly: ``OPERATOR``."""
        self.cancelled_by = by

    @workflow.update(name="respond")
    async def respond(self, response: HumanResponse) -> None:
        """A person's answer to a waiting human node (POST /Execution/{id}/signal)."""
        self.responses[response.node_id] = response

    @respond.validator
    def _validate_respond(self, response: HumanResponse) -> None:
        if response.node_id not in self.waiting:
            raise ApplicationError(
                f"node {response.node_id!r} is not waiting for a response",
                type=ErrorType.NOT_WAITING.value,
            )

    @workflow.query(name="waiting_nodes")
    def waiting_nodes(self) -> list[str]:
        return sorted(self.waiting)

    # -- the run ------------------------------------------------------------------------

    @workflow.run
    async def run(self, params: ExecutionInput) -> ExecutionResult:
        try:
            definition = Definition.model_validate(params.definition)
            graph = compiled(params.definition, definition)
            self._bind(definition)
            if params.resume is None:
                self._emit(EventType.EXECUTION_STARTED, data={"input": params.input})
            final = await self._drive(graph, definition)
        except NodeFailure as failed:
            self._emit(
                EventType.EXECUTION_FAILED, failed.node_id, ExecutionFailed(error=str(failed))
            )
            await self._sync()
            raise ApplicationError(
                str(failed), type=ErrorType.EXECUTION_FAILED.value, non_retryable=True
            ) from None
        except BaseException as exc:
            # A cancel reaches us as CancelledError, or as the ActivityError of the node
            # whose activity acknowledged it; re-raising either ends the run as cancelled.
            if is_cancelled_exception(exc):
                self._emit(
                    EventType.EXECUTION_CANCELLED, data={"by": self.cancelled_by or OPERATOR}
                )
                await self._sync()
                raise
            if not isinstance(exc, Exception):
                raise  # not ours to handle (the SDK's own control flow)
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            workflow.logger.exception("execution failed inside the workflow")
            self._emit(EventType.EXECUTION_FAILED, data=ExecutionFailed(error=message))
            await self._sync()
            raise ApplicationError(
                message, type=ErrorType.ENGINE_ERROR.value, non_retryable=True
            ) from None
        if final is None:
            await self._continue_as_new()
        output = self._output(definition, final.get("nodes", {}))
        self._emit(EventType.EXECUTION_COMPLETED, data=ExecutionCompleted(output=output))
        await self._sync()
        return ExecutionResult(status=ExecutionStatus.COMPLETED, output=output)

    async def _drive(self, graph: Any, definition: Definition) -> dict[str, Any] | None:
        """Run the graph (from START, or from where the previous run of the chain stopped)
        superstep by superstep. Returns its final state, or None when it stopped to
        continue as new."""
        final: dict[str, Any] | None = None
        start = None if self.params.resume else {"input": self.params.input, "nodes": {}}
        try:
            async for state in graph.astream(
                start,
                config={
                    "recursion_limit": step_limit(definition),
                    "configurable": {
                        "thread_id": THREAD,
                        RUN: self,  # the graph is shared: its nodes find this run here
                        CHECKPOINTER: self.handover,
                    },
                },
                stream_mode="values",
                durability="exit",
                control=self.control,
            ):
                final = state
                if _cancel_requested():
                    # The cancel met activities that finished anyway, and LangGraph went
                    # on: stop here, between supersteps, rather than run the next one.
                    raise asyncio.CancelledError("cancel requested")
                self._hand_over_if_long()
        except GraphDrained:
            return None
        return final

    def _hand_over_if_long(self) -> None:
        """Once the history is long, ask LangGraph to stop before its next superstep (the
        run then continues as new). Called after every node and superstep."""
        if self.control.drain_requested:
            return
        info = workflow.info()
        if (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.params.max_history_events
        ):
            self.control.request_drain(HAND_OVER)

    async def _continue_as_new(self) -> NoReturn:
        """Hand over to a new run between two supersteps: the events so far are recorded
        first, so the stream's retained log can be dropped (watchers behind it read the
        record); where the graph stands, the visit counts, the rerun memo entries still
        to come and the stream's state travel along."""
        await self._sync()
        synced = self.stream.get_state()
        self.stream.truncate(synced.base_offset + len(synced.log))
        position = self.handover.position(self.visits, self.last_finished)
        memo = still_to_come(self.memo, self.visits)
        workflow.logger.info(
            "continuing as new",
            extra={
                "history_events": workflow.info().get_current_history_length(),
                "checkpoint_chars": len(position.checkpoint),
                "memo": len(memo),
            },
        )
        await self.stream.continue_as_new(
            lambda state: [
                self.params.model_copy(
                    update={
                        "memo": memo,
                        "resume": position,
                        "stream_state": state,
                    }
                )
            ]
        )

    def _output(self, definition: Definition, nodes: dict[str, Any]) -> Any:
        """The run's result: the output of the node that led to END (a dict by node id
        when several did). A condition routing straight to END carries no data of its
        own, so then the last node that finished before it speaks for the run."""
        finishing = [e.source for e in definition.edges if e.target == "END" and e.source in nodes]
        if not finishing and self.last_finished:
            finishing = [self.last_finished]
        outputs = {nid: nodes[nid].get("output") for nid in finishing}
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs or None

    def _emit(
        self,
        kind: EventType,
        node_id: str | None = None,
        data: BaseModel | dict[str, Any] | None = None,
    ) -> None:
        self.events.publish(event(kind, workflow.now().isoformat(), node_id, data))

    async def _sync(self) -> None:
        """Fold the events so far into the database record of the run: the events not yet
        recorded go to a local activity, run in this workflow task. Runs started before
        that (neither ``record_in_task`` nor the ``RECORD_IN_TASK`` marker) call the
        activity that reads the stream."""
        if not (self.params.record_in_task or workflow.patched(RECORD_IN_TASK)):
            await self._sync_from_stream()
            return
        state = self.stream.get_state()
        up_to = state.base_offset + len(state.log)
        items = [
            StreamItem(offset=offset, data=item.data)
            for offset, item in enumerate(state.log, start=state.base_offset)
            if offset >= self.recorded_up_to and item.topic == EVENTS_TOPIC
        ]
        try:
            await workflow.execute_local_activity(
                sync_execution,
                SyncInput(
                    execution_id=self.params.execution_id, events=items, after=self.recorded_up_to
                ),
                start_to_close_timeout=SYNC_TIMEOUT,
                retry_policy=SYNC_RETRY,
                summary="record execution state",
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                raise
            if not isinstance(err, ActivityError) and not workflow.patched(RECORD_FALLBACK):
                raise  # how runs before the patch went on: they failed here
            workflow.logger.warning(
                "recording the events handed over failed; reading them from the stream",
                extra={"error": str(err.cause or err)},
            )
            await self._sync_from_stream()  # reads all that is retained, so at least up_to
        self.recorded_up_to = up_to

    async def _sync_from_stream(self) -> None:
        await workflow.execute_activity(
            sync_execution,
            SyncInput(execution_id=self.params.execution_id),
            start_to_close_timeout=SYNC_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            summary="record execution state",
        )

    # -- the definition's nodes, for the shared graph (workflows.graph) -------------------

    def _bind(self, definition: Definition) -> None:
        """What this run does in each node of the definition, and how its routers choose."""
        self.node_runs: dict[str, Callable[[RunState], Awaitable[dict[str, Any]]]] = {}
        self.routers: dict[str, Callable[[RunState], Awaitable[Any]]] = {}
        for node in definition.nodes:
            if isinstance(node, AgentNode):
                self.node_runs[node.id] = self._tracked(node, self._agent(node))
            elif isinstance(node, ToolNode):
                self.node_runs[node.id] = self._tracked(node, self._tool(node))
            elif isinstance(node, ConditionNode):
                self.node_runs[node.id] = self._condition(node)
                self.routers[node.id] = self._route_condition(node)
            elif isinstance(node, HumanNode):
                self.node_runs[node.id] = self._tracked(node, self._human(node))
                if node.on_reject:
                    self.routers[node.id] = self._route_human(node, definition)

    async def run_node(self, node_id: str, state: RunState) -> dict[str, Any]:
        return await self.node_runs[node_id](state)

    async def route(self, node_id: str, state: RunState) -> Any:
        return await self.routers[node_id](state)

    def _context(self, state: RunState) -> dict[str, Any]:
        return {"input": state.get("input", {}), "nodes": state.get("nodes", {})}

    def _tracked(
        self, node: MemoNode, body: Callable[[RunState, int], Awaitable[dict[str, Any]]]
    ) -> Callable[[RunState], Awaitable[dict[str, Any]]]:
        """node.started / node.completed around a node's work, with its duration; a visit
        a rerun's memo answers returns the parent's result and does no work."""
        node_id = node.id

        async def run(state: RunState) -> dict[str, Any]:
            self.visits[node_id] += 1
            visit = self.visits[node_id]
            key = memo_key(node, visit, self._context(state), self.params)
            kept = self.memo.get(key)
            if kept is not None:
                return self._reuse(node_id, key, kept)
            started = workflow.now()
            self._emit(EventType.NODE_STARTED, node_id)
            result = await body(state, visit)
            duration_ms = int((workflow.now() - started).total_seconds() * 1000)
            self.last_finished = node_id
            self._hand_over_if_long()
            self._emit(
                EventType.NODE_COMPLETED,
                node_id,
                NodeCompleted(
                    output=result.get("output"),
                    duration_ms=duration_ms,
                    attempts=result.get("attempts", 1),
                    memo_key=key,
                ),
            )
            return {"nodes": {node_id: result}}

        return run

    def _reuse(self, node_id: str, key: str, kept: MemoEntry) -> dict[str, Any]:
        """A visit answered from a parent execution's result (a rerun): reported as
        reused, and nothing runs."""
        self.last_finished = node_id
        self._emit(EventType.NODE_STARTED, node_id, {"reused": True})
        self._emit(
            EventType.NODE_COMPLETED,
            node_id,
            NodeCompleted(
                output=kept.output,
                duration_ms=0,
                attempts=kept.attempts,
                memo_key=key,
                reused=True,
                from_execution=kept.from_execution,
            ),
        )
        return {"nodes": {node_id: {"output": kept.output, "attempts": kept.attempts}}}

    def _agent(self, node: AgentNode) -> Callable[[RunState, int], Awaitable[dict[str, Any]]]:
        async def run(state: RunState, visit: int) -> dict[str, Any]:
            agent = self.params.agents.get(str(node.agent_id))
            if agent is None:
                raise self._fail(
                    node.id, f"agent {node.agent_id} was not found when the run started"
                )
            tools = [
                self.params.tools[str(t)] for t in agent.tool_ids if str(t) in self.params.tools
            ]
            messages: list[dict[str, Any]] = []
            if agent.system_prompt:
                messages.append({"role": "system", "content": agent.system_prompt})
            messages.append(
                {"role": "user", "content": render_text(node.input, self._context(state))}
            )
            timeout = timedelta(seconds=node.timeout_s) if node.timeout_s else DEFAULT_AGENT_TIMEOUT
            usage = {"prompt_tokens": 0, "completion_tokens": 0}
            attempts = 1
            for call_index in range(agent.max_iterations):
                try:
                    reply = await _execute_node_activity(
                        llm_call,
                        LlmCallInput(
                            execution_id=self.params.execution_id,
                            workflow_id=self.params.workflow_id,
                            node_id=node.id,
                            agent=agent,
                            messages=messages,
                            tools=tools,
                            call_index=call_index,
                            visit=visit,
                            workspace_id=self.params.workspace_id,
                        ),
                        activity_id=f"{node.id}/{visit}/llm/{call_index}",
                        summary=f"{node.id}: {agent.name} ({agent.model})",
                        start_to_close_timeout=timeout,
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=_retry_policy(node.retry),
                        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    )
                except ActivityError as err:
                    if is_cancelled_exception(err):
                        raise
                    message, tries = _failure(err, (node.retry or RetrySpec()).max_attempts)
                    raise self._fail(node.id, message, tries) from None
                attempts = max(attempts, reply.attempt)
                usage["prompt_tokens"] += reply.usage.prompt_tokens
                usage["completion_tokens"] += reply.usage.completion_tokens
                self._emit(
                    EventType.USAGE_RECORDED,
                    node.id,
                    {
                        "agent_id": agent.id,
                        "model": reply.model,
                        "call_index": call_index,
                        "prompt_tokens": reply.usage.prompt_tokens,
                        "completion_tokens": reply.usage.completion_tokens,
                        "cost_usd": reply.cost_usd,
                        "unpriced": reply.unpriced,
                    },
                )
                if not reply.tool_calls:
                    return {"output": reply.content, "usage": usage, "attempts": attempts}
                messages.append(
                    {"role": "assistant", "content": reply.content, "tool_calls": reply.tool_calls}
                )
                results = await asyncio.gather(
                    *[
                        self._agent_tool_call(node, visit, call_index, i, call, tools)
                        for i, call in enumerate(reply.tool_calls)
                    ]
                )
                messages.extend(results)
            raise self._fail(
                node.id,
                f"agent {agent.name!r} did not answer within "
                f"max_iterations={agent.max_iterations} model calls",
            )

        return run

    async def _agent_tool_call(
        self,
        node: AgentNode,
        visit: int,
        call_index: int,
        i: int,
        call: dict[str, Any],
        tools: list[ToolSpec],
    ) -> dict[str, Any]:
        """One tool call the model asked for, as its own activity; the result goes back."""
        name = call.get("name", "")
        tool = next((t for t in tools if t.name == name), None)
        call_id = str(call.get("id") or f"{call_index}-{i}")
        if tool is None:
            content = f"error: there is no tool named {name!r}"
        else:
            result = await self._call_tool(
                node.id,
                tool,
                call.get("args") or {},
                f"{self.params.execution_id}/{node.id}/{visit}/{call_index}/{i}",
                f"{node.id}/{visit}/tool/{call_index}/{i}",
                node.timeout_s,
                None,
                agent_id=node.agent_id,
                visit=visit,
                call_index=f"{call_index}.{i}",
            )
            content = result.output if result.ok else f"error: {result.error}"
        return {
            "role": "tool",
            "tool_call_id": call_id,
            "content": content if isinstance(content, str) else _json(content),
        }

    async def _call_tool(
        self,
        node_id: str,
        tool: ToolSpec,
        arguments: dict[str, Any],
        call_id: str,
        activity_id: str,
        timeout_s: float | None,
        retry: RetrySpec | None,
        agent_id: int | None = None,
        visit: int = 1,
        call_index: str = "0",
    ) -> ToolCallResult:
        """Call a tool as its own activity. A failure, once retries are spent, is a result
        with ok=False: a tool node fails on it, an agent hands it back to its model."""
        at_most_once = tool.config.get("delivery") == "at_most_once"
        try:
            result = await _execute_node_activity(
                call_tool,
                ToolCallInput(
                    execution_id=self.params.execution_id,
                    workflow_id=self.params.workflow_id,
                    node_id=node_id,
                    tool=tool,
                    arguments=arguments,
                    call_id=call_id,
                    agent_id=agent_id,
                    visit=visit,
                    call_index=call_index,
                    workspace_id=self.params.workspace_id,
                ),
                activity_id=activity_id,
                idempotent=not at_most_once,
                summary=f"{node_id}: tool {tool.name}",
                start_to_close_timeout=timedelta(seconds=timeout_s)
                if timeout_s
                else DEFAULT_TOOL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=_retry_policy(retry, at_most_once=at_most_once),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            message, tries = _failure(
                err, 1 if at_most_once else (retry or RetrySpec()).max_attempts
            )
            result = ToolCallResult(ok=False, error=message, attempt=tries)
        self._emit(
            EventType.TOOL_CALLED,
            node_id,
            {
                "tool": tool.name,
                "arguments": arguments,
                "ok": result.ok,
                "error": result.error,
                "attempts": result.attempt,
            },
        )
        return result

    def _tool(self, node: ToolNode) -> Callable[[RunState, int], Awaitable[dict[str, Any]]]:
        async def run(state: RunState, visit: int) -> dict[str, Any]:
            tool = self.params.tools.get(str(node.tool_id))
            if tool is None:
                raise self._fail(node.id, f"tool {node.tool_id} was not found when the run started")
            arguments = render_value(node.arguments, self._context(state))
            result = await self._call_tool(
                node.id,
                tool,
                arguments,
                f"{self.params.execution_id}/{node.id}/{visit}",
                f"{node.id}/{visit}/tool",
                node.timeout_s,
                node.retry,
                visit=visit,
            )
            if not result.ok:
                raise self._fail(node.id, result.error or "tool call failed", result.attempt)
            return {"output": result.output, "attempts": result.attempt}

        return run

    def _condition(self, node: ConditionNode) -> Callable[[RunState], Awaitable[dict[str, Any]]]:
        async def run(state: RunState) -> dict[str, Any]:
            self.visits[node.id] += 1
            if node.max_visits is not None and self.visits[node.id] > node.max_visits:
                raise self._fail(
                    node.id,
                    f"condition {node.id!r} was reached more than "
                    f"max_visits={node.max_visits} times",
                )
            context = self._context(state)
            chosen = next((r.to for r in node.routes if matches(r.when, context)), node.default)
            if chosen is None:
                raise self._fail(
                    node.id, f"no route of condition {node.id!r} matched and it has no default"
                )
            self._emit(EventType.NODE_STARTED, node.id)
            self._emit(
                EventType.NODE_COMPLETED,
                node.id,
                NodeCompleted(output={"route": chosen}, duration_ms=0, attempts=1),
            )
            return {"nodes": {node.id: {"output": {"route": chosen}}}}

        return run

    def _route_condition(self, node: ConditionNode) -> Callable[[RunState], Awaitable[Any]]:
        async def route(state: RunState) -> Any:
            chosen = state["nodes"][node.id]["output"]["route"]
            return END if chosen == "END" else chosen

        return route

    def _human(self, node: HumanNode) -> Callable[[RunState, int], Awaitable[dict[str, Any]]]:
        async def run(state: RunState, visit: int) -> dict[str, Any]:
            prompt = render_text(node.prompt, self._context(state))
            self.responses.pop(node.id, None)
            self.waiting.add(node.id)
            self._emit(
                EventType.HUMAN_WAITING, node.id, {"prompt": prompt, "timeout_s": node.timeout_s}
            )
            await self._sync()
            timed_out = False
            try:
                await workflow.wait_condition(
                    lambda: node.id in self.responses, timeout=timedelta(seconds=node.timeout_s)
                )
                response = self.responses[node.id]
            except TimeoutError:
                timed_out = True
                response = HumanResponse(
                    node_id=node.id, action=node.on_timeout, comment="timed out"
                )
            finally:
                self.waiting.discard(node.id)
            answer = {
                "action": response.action,
                "comment": response.comment,
                "data": response.data,
                "timed_out": timed_out,
            }
            said = answer if response.by is None else {**answer, "by": response.by}
            self._emit(EventType.HUMAN_RESPONDED, node.id, said)
            if response.action == "reject" and not node.on_reject:
                reason = f": {response.comment}" if response.comment else ""
                raise self._fail(node.id, f"rejected at {node.id!r}{reason}")
            return {"output": answer}

        return run

    def _route_human(
        self, node: HumanNode, definition: Definition
    ) -> Callable[[RunState], Awaitable[Any]]:
        approved = [
            END if e.target == "END" else e.target for e in definition.edges if e.source == node.id
        ]

        async def route(state: RunState) -> Any:
            if state["nodes"][node.id]["output"]["action"] == "reject":
                return END if node.on_reject == "END" else node.on_reject
            return approved

        return route

    def _fail(self, node_id: str, message: str, attempts: int = 1) -> NodeFailure:
        self._emit(EventType.NODE_FAILED, node_id, NodeFailed(error=message, attempts=attempts))
        return NodeFailure(node_id, message)


def _cancel_requested() -> bool:
    """Whether the run was asked to cancel, even if no await has raised it (an activity
    that completed despite the cancel swallows the CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
