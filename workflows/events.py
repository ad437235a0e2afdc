"""The execution event vocabulary (pure; shared by workflow, activities and API).

Events travel through the run's Temporal workflow stream as plain dicts
``{"type", "node_id", "ts", "data"}``; a watcher's ``seq`` is the stream offset
plus one, so it is contiguous per execution by construction.
"""

from __future__ import annotations

from enum import StrEnum


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


def event(type_: EventType, ts: str, node_id: str | None = None,
          data: dict[str, object] | None = None) -> dict[str, object]:
    return {"type": str(type_), "node_id": node_id, "ts": ts, "data": data or {}}
