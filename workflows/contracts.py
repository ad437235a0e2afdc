"""What the workflow and the activities pass each other: one pydantic model each way,
and the activities themselves, declared by name and signature.

Pure (no I/O), so the workflow sandbox can import it. Add fields with defaults
only: runs in flight carry the old shape in their history.

The workflow calls activities by reference to the declarations at the end of
this module (``workflow.execute_activity(llm_call, ...)``); the worker registers
the implementations in ``activities/``, which are declared with the same names
(``ActivityName``). A declaration's body never runs. Registered names must not
change: recorded histories schedule activities by name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamState

from workflows.status import ExecutionStatus


class AgentSpec(BaseModel):
    """An agent as it was when the execution started. Its API key never travels here: the
    activity reads it by id (``api_key_encrypted`` is set only in runs recorded before)."""

    id: int
    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key_encrypted: str | None = None
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    max_iterations: int = 8
    tool_ids: list[int] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(BaseModel):
    """A tool as it was when the execution started. Secret config values are masked: the
    activity reads them by id (runs recorded before carry them encrypted)."""

    id: int
    name: str
    description: str = ""
    type: Literal["http", "mcp"]
    input_schema: dict[str, Any] | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class MemoEntry(BaseModel):
    """One finished node visit of a parent execution, kept in a rerun's memo (see
    workflows.memo)."""

    output: Any = None
    attempts: int = 1
    from_execution: int  # the execution whose visit really ran
    node_id: str = ""
    visit: int = 0  # which visit of the node it was (0: unknown)


class GraphPosition(BaseModel):
    """Where a run's graph stood when it continued as new (see workflows.handover)."""

    encoding: str  # the type tag of LangGraph's serializer
    checkpoint: str  # LangGraph's checkpoint after the last superstep, base64
    visits: dict[str, int] = Field(default_factory=dict)  # by node id
    last_finished: str | None = None  # the last agent, tool or human node that finished


class ExecutionInput(BaseModel):
    execution_id: int
    workspace_id: int = 1
    workflow_id: int
    workflow_version: int
    definition: dict[str, Any]
    input: dict[str, Any] = Field(default_factory=dict)
    agents: dict[str, AgentSpec] = Field(default_factory=dict)  # keyed by str(agent id)
    tools: dict[str, ToolSpec] = Field(default_factory=dict)  # keyed by str(tool id)
    # A rerun's seed: the parent's finished node visits by memo key (those still to come).
    memo: dict[str, MemoEntry] = Field(default_factory=dict)
    # Continue-as-new: where the graph stood, and the event stream's state (so seq
    # stays contiguous). None for the first run of an execution.
    resume: GraphPosition | None = None
    stream_state: WorkflowStreamState | None = None
    # The run continues as new once its history reaches this many events (Temporal warns
    # at 10,240), or sooner when Temporal suggests it.
    max_history_events: int = 5000
    # True for every run the API starts: it records its events with a local activity in
    # the workflow task that reached a milestone (ExecutionWorkflow._sync) without asking
    # the RECORD_IN_TASK patch, whose marker the SDK writes with an upsert of the
    # TemporalChangeVersion search attribute. False in runs started before (their inputs
    # lack it), which ask the patch.
    record_in_task: bool = False


class ExecutionResult(BaseModel):
    status: ExecutionStatus
    output: Any = None
    error: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class LlmCallInput(BaseModel):
    execution_id: int
    workflow_id: int
    node_id: str
    agent: AgentSpec
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = Field(default_factory=list)
    # Which model call of which visit of the node: with the attempt, the usage ledger key.
    call_index: int = 0
    visit: int = 1
    workspace_id: int = 1
    # Attempts used by earlier schedules of this call that lost their worker.
    attempts_before: int = 0


class LlmCallResult(BaseModel):
    content: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    attempt: int = 1
    cost_usd: str = "0.000000"  # as priced in the ledger (USD, as text)
    unpriced: bool = False


class ToolCallInput(BaseModel):
    execution_id: int
    workflow_id: int
    node_id: str
    tool: ToolSpec
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_id: str  # stable across retries: the Idempotency-Key sent downstream
    agent_id: int | None = None
    # Which call of which visit of the node: with the attempt, the usage ledger key.
    call_index: str = "0"
    visit: int = 1
    workspace_id: int = 1
    # Attempts used by earlier schedules of this call that lost their worker.
    attempts_before: int = 0


class ToolCallResult(BaseModel):
    ok: bool
    output: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    attempt: int = 1


class StreamItem(BaseModel):
    """One retained item of the run's event stream, as the stream keeps it."""

    offset: int  # 0-based place in the stream (the event's seq is offset + 1)
    data: str  # base64 of the serialized Payload (the stream's wire form)


class SyncInput(BaseModel):
    execution_id: int
    # The events from stream offset ``after`` on, handed over by the workflow, so the
    # record is written without reading the stream back (and so the call can be a local
    # activity: a query would wait for the workflow task it runs in). None: the activity
    # reads the stream itself (runs recorded before this field existed).
    events: list[StreamItem] | None = None
    after: int = 0


class HumanResponse(BaseModel):
    node_id: str
    action: Literal["approve", "reject"]
    comment: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    # Who answered: {"type": "user"|"api_key", "id", "name"}; None in older histories.
    by: dict[str, Any] | None = None


class ActivityName(StrEnum):
    LLM_CALL = "keel.llm_call"
    CALL_TOOL = "keel.call_tool"
    SYNC_EXECUTION = "keel.sync_execution"


@activity.defn(name=ActivityName.LLM_CALL.value)
async def llm_call(params: LlmCallInput) -> LlmCallResult:
    """One model call of an agent node (``activities.nodes.NodeActivities.llm_call``)."""
    raise NotImplementedError("a declaration: the worker runs the registered activity")


@activity.defn(name=ActivityName.CALL_TOOL.value)
async def call_tool(params: ToolCallInput) -> ToolCallResult:
    """One tool call (``activities.nodes.NodeActivities.call_tool``)."""
    raise NotImplementedError("a declaration: the worker runs the registered activity")


@activity.defn(name=ActivityName.SYNC_EXECUTION.value)
async def sync_execution(params: SyncInput) -> int:
    """Fold the run's events into its database record
    (``activities.record.RecordActivities.sync_execution``)."""
    raise NotImplementedError("a declaration: the worker runs the registered activity")
