"""The execution event vocabulary (pure; shared by workflow, activities and API).

Every event is an ``Event``: published into the run's Temporal workflow stream
(topic ``EVENTS_TOPIC``) by the workflow and its activities, and read back as a
``RecordedEvent``, which adds ``seq``: the stream offset plus one, so it is
contiguous per execution by construction. On the wire both are plain JSON
objects ``{"seq"?, "type", "node_id", "ts", "data"}``.

The ``data`` of the events the record is folded from has a model of its own
below (``NodeCompleted``, ``NodeFailed``, ...): publishers build it with the model
and readers parse it with the same model, never with ``dict.get``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventType(StrEnum):
    EXECUTION_STARTED = "execution.started"
    NODE_STARTED = "node.started"
    NODE_COMPLETED = "node.completed"
    NODE_RETRYING = "node.retrying"
    NODE_FAILED = "node.failed"
    LLM_DELTA = "llm.delta"
    TOOL_CALLED = "tool.called"
    HUMAN_WAITING = "human.waiting"
    HUMAN_RESPONDED = "human.responded"
    USAGE_RECORDED = "usage.recorded"
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled"


TERMINAL_EVENTS = frozenset(
    {EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED, EventType.EXECUTION_CANCELLED}
)

# The stream topic every event is published on.
EVENTS_TOPIC = "events"


class Event(BaseModel):
    """One thing that happened in a run, as published (``ts``: ISO 8601 with offset)."""

    type: EventType
    node_id: str | None = None
    ts: str
    data: dict[str, Any] = Field(default_factory=dict)


# ``data.by`` of an ``execution.cancelled`` done in Temporal directly (not through the API).
OPERATOR: dict[str, Any] = {"type": "operator", "id": None, "name": "operator"}


class RecordedEvent(Event):
    """An event with its place in the run's stream (1-based, contiguous)."""

    seq: int


def event(
    type_: EventType,
    ts: str,
    node_id: str | None = None,
    data: BaseModel | dict[str, Any] | None = None,
) -> Event:
    """An event; ``data`` given as one of the models below is dumped to JSON types."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return Event(type=type_, node_id=node_id, ts=ts, data=data or {})


# -- the data of the events the execution record is folded from -------------------------


class ExecutionCompleted(BaseModel):
    """``execution.completed``: what the run returns."""

    output: Any = None


class ExecutionFailed(BaseModel):
    """``execution.failed``: why the run failed."""

    error: str | None = None


class NodeCompleted(BaseModel):
    """``node.completed``. ``memo_key``: the visit's key in the memo (workflows.memo), so
    a rerun can reuse it; ``reused``/``from_execution``: answered from the result of an
    earlier execution (a rerun), not run again. Those three are left out when unset."""

    output: Any = None
    duration_ms: int = 0
    attempts: int = 1
    memo_key: str | None = Field(default=None, exclude_if=lambda v: v is None)
    reused: bool = Field(default=False, exclude_if=lambda v: not v)
    from_execution: int | None = Field(default=None, exclude_if=lambda v: v is None)


class NodeFailed(BaseModel):
    """``node.failed``: the node failed for good after ``attempts`` attempts."""

    error: str | None = None
    attempts: int = 1


class NodeRetrying(BaseModel):
    """``node.retrying``: the attempt about to start, and why the last one failed."""

    attempt: int = 0
    error: str | None = None


def recorded(offset: int, item: Event) -> RecordedEvent:
    """The event at stream ``offset`` (0-based), as watchers and the record see it."""
    return RecordedEvent(seq=offset + 1, **item.model_dump())
