"""Following a run's stream once the run has closed (infra.streams.follow_stream)."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from infra import streams
from infra.streams import follow_stream
from tests.support.engine import Platform
from tests.support.graphs import chain
from workflows.events import EVENTS_TOPIC, Event, EventType


async def _follow_closed_run(
    platform: Platform, temporal_workflow_id: str, **options: Any
) -> list[Event]:
    batches = [
        batch
        async for batch in follow_stream(
            platform.client, temporal_workflow_id, EVENTS_TOPIC, 0, Event, lambda: 0.0, **options
        )
    ]
    return [item.data for batch in batches for item in batch]


async def _closed_run(platform: Platform) -> str:
    """A one-node run, completed; its Temporal workflow id."""
    agent = await platform.agent("writer")
    workflow_id = await platform.workflow(
        {
            "nodes": [{"id": "write", "type": "agent", "agent_id": agent, "input": "hi"}],
            "edges": chain("write"),
        }
    )
    execution = await platform.run(workflow_id)
    await platform.wait_status(execution["id"], "completed")
    return str(execution["temporal"]["workflow_id"])


async def test_a_closed_runs_stream_is_read_only_when_asked(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default the events of a closed run come from its stream (a query that a worker
    answers by replaying the run); ``read_closed=False`` ends at once, for the event hub,
    which has them in the run's record."""
    temporal_workflow_id = await _closed_run(platform)

    read = await _follow_closed_run(platform, temporal_workflow_id)
    assert read[0].type == EventType.EXECUTION_STARTED
    assert read[-1].type == EventType.EXECUTION_COMPLETED

    queried: list[str] = []

    async def read_stream(client: object, workflow_id: str, *args: object) -> list[object]:
        queried.append(workflow_id)
        return []

    monkeypatch.setattr(streams, "read_stream", read_stream)
    assert await _follow_closed_run(platform, temporal_workflow_id, read_closed=False) == []
    assert queried == []


async def test_a_failed_poll_asks_the_caller_before_temporal(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the caller says the chain has ended (the event hub: its record holds the
    run's end), a failed poll ends the follow without asking Temporal why it failed."""
    temporal_workflow_id = await _closed_run(platform)

    described: list[str] = []
    describe = WorkflowHandle.describe

    async def counted(self: WorkflowHandle[Any, Any], **kwargs: Any) -> Any:
        described.append(self.id)
        return await describe(self, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "describe", counted)
    asked: list[bool] = []

    async def ended(answer: bool) -> bool:
        asked.append(answer)
        return answer

    assert (
        await _follow_closed_run(
            platform, temporal_workflow_id, read_closed=False, ended=lambda: ended(True)
        )
        == []
    )
    assert (asked, described) == ([True], [])
    assert (
        await _follow_closed_run(
            platform, temporal_workflow_id, read_closed=False, ended=lambda: ended(False)
        )
        == []
    )
    assert asked == [True, False]
    assert described == [temporal_workflow_id]  # not known to the caller: Temporal says
