from __future__ import annotations

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.accounts import PrincipalOut
from api.schemas.common import MAX_DB_ID, InputModel, Timestamp
from workflows.events import EventType
from workflows.status import ExecutionStatus, NodeStatus


class CloseCode(IntEnum):
    """How the API closes an execution's WebSocket (the contract's codes)."""

    NORMAL = 1000  # every event was sent
    ERROR = 1011  # the event stream failed
    RESTART = 1012  # this API replica is stopping: reconnect (to any) with ``after``
    BAD_AFTER = 4400  # ``after`` is not a whole number >= 0
    UNAUTHORIZED = 4401  # no valid credential
    UNKNOWN = 4404  # no such execution (in the caller's workspace)


class ExecutionCreate(InputModel):
    workflow_id: int
    version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DB_ID,
        description="Published version to run; default the latest.",
    )
    input: dict[str, Any] = Field(default_factory=dict)
    start: bool = False


class SignalBody(InputModel):
    node_id: str = Field(min_length=1, max_length=64)
    action: Literal["approve", "reject"]
    comment: str = Field(default="", max_length=10_000)
    data: dict[str, Any] = Field(default_factory=dict)


class RerunBody(InputModel):
    from_node: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Run this node and everything downstream again.",
    )
    input: dict[str, Any] | None = Field(default=None, description="Default: the parent's.")
    version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Default: the parent's version."
    )
    start: bool = True


class NodeRunOut(BaseModel):
    node_id: str
    status: NodeStatus
    attempts: int
    started_at: Timestamp | None
    finished_at: Timestamp | None
    output: Any
    error: str | None
    reused: bool = False


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: str


class TemporalRef(BaseModel):
    workflow_id: str | None
    run_id: str | None
    ui_url: str | None
    problems: list[str] = Field(
        default_factory=list,
        description="What Temporal reports about a run it cannot advance, such as a "
        "workflow task that keeps failing.",
    )


class ExecutionOut(BaseModel):
    id: int
    workflow_id: int
    workflow_version: int
    status: ExecutionStatus
    input: dict[str, Any]
    output: Any
    error: str | None
    nodes: list[NodeRunOut]
    usage: UsageOut
    temporal: TemporalRef
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    parent_execution_id: int | None = None
    # Who created it; null for executions made before access control.
    created_by: PrincipalOut | None = None


class EventOut(BaseModel):
    seq: int
    type: EventType
    execution_id: int
    node_id: str | None
    ts: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next: int
