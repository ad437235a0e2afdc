"""The execution record: the pure fold of events, and the writers' protocol on a real
database (two writers at once serialize; neither loses nor repeats an event)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db import create_engine, session_factory
from infra.execution_store import GapInEvents, append, lock
from infra.models import DEFAULT_WORKSPACE_ID, Execution, ExecutionEvent, NodeRun, Workflow
from workflows.events import (
    EventType,
    ExecutionCompleted,
    ExecutionFailed,
    NodeCompleted,
    NodeFailed,
    NodeRetrying,
    RecordedEvent,
    event,
)
from workflows.record import fold
from workflows.status import ExecutionStatus, NodeStatus

T0 = "2025-01-01T00:00:00+00:00"


@dataclass
class Run:
    status: str = ExecutionStatus.RUNNING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: str | None = None


@dataclass
class Node:
    node_id: str
    status: str = ""
    attempts: int = -1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    error: str | None = None
    reused: bool = False


def at(second: int) -> str:
    return f"2025-01-01T00:00:{second:02d}+00:00"


def folded(*events: Any, run: Run | None = None) -> tuple[Run, dict[str, Node]]:
    run = run or Run()
    nodes: dict[str, Node] = {}
    fold(run, nodes, list(events), Node)
    return run, nodes


def test_a_run_that_completes() -> None:
    run, nodes = folded(
        event(EventType.EXECUTION_STARTED, at(1), data={"input": {}}),
        event(EventType.NODE_STARTED, at(2), "a"),
        event(EventType.NODE_COMPLETED, at(3), "a", NodeCompleted(output="hi", attempts=2)),
        event(EventType.EXECUTION_COMPLETED, at(4), data=ExecutionCompleted(output="hi")),
    )
    assert run.status == ExecutionStatus.COMPLETED
    assert (run.started_at, run.finished_at) == (
        datetime.fromisoformat(at(1)),
        datetime.fromisoformat(at(4)),
    )
    assert run.output == "hi"
    a = nodes["a"]
    assert (a.status, a.attempts, a.output, a.error) == (NodeStatus.COMPLETED, 2, "hi", None)
    assert a.finished_at == datetime.fromisoformat(at(3))


def test_retries_count_attempts_and_a_failure_fails_open_nodes() -> None:
    run, nodes = folded(
        event(EventType.NODE_STARTED, at(1), "a"),
        event(EventType.NODE_STARTED, at(1), "b"),
        event(EventType.NODE_RETRYING, at(2), "a", NodeRetrying(attempt=2, error="503")),
        event(EventType.NODE_RETRYING, at(3), "a", NodeRetrying(attempt=3, error="503 again")),
        event(EventType.NODE_FAILED, at(4), "a", NodeFailed(error="gave up", attempts=3)),
        event(EventType.EXECUTION_FAILED, at(5), "a", ExecutionFailed(error="gave up")),
    )
    assert (run.status, run.error) == (ExecutionStatus.FAILED, "gave up")
    assert (nodes["a"].status, nodes["a"].attempts, nodes["a"].error) == (
        NodeStatus.FAILED,
        3,
        "gave up",
    )
    # b was still running when the run failed.
    assert nodes["b"].status == NodeStatus.FAILED
    assert nodes["b"].finished_at == datetime.fromisoformat(at(5))


def test_a_human_node_waits_and_a_cancel_cancels_open_nodes() -> None:
    run, nodes = folded(
        event(EventType.NODE_STARTED, at(1), "ask"),
        event(EventType.HUMAN_WAITING, at(1), "ask", {"prompt": "ok?", "timeout_s": 60}),
    )
    assert (run.status, nodes["ask"].status) == (ExecutionStatus.WAITING, NodeStatus.WAITING)
    fold(run, nodes, [event(EventType.HUMAN_RESPONDED, at(2), "ask", {"action": "approve"})], Node)
    assert run.status == ExecutionStatus.RUNNING
    fold(run, nodes, [event(EventType.EXECUTION_CANCELLED, at(3))], Node)
    assert run.status == ExecutionStatus.CANCELLED
    assert nodes["ask"].status == NodeStatus.CANCELLED


def test_events_without_a_record_of_their_own_only_introduce_their_node() -> None:
    run, nodes = folded(
        event(EventType.LLM_DELTA, at(1), "a", {"delta": "h"}),
        event(EventType.TOOL_CALLED, at(1), "a", {"tool": "t", "ok": True}),
        event(EventType.USAGE_RECORDED, at(1), "a", {"prompt_tokens": 3}),
    )
    assert run == Run()
    assert (nodes["a"].status, nodes["a"].attempts) == (NodeStatus.PENDING, 0)


def test_a_finished_run_is_not_reopened() -> None:
    run = Run(status=ExecutionStatus.COMPLETED)
    folded(
        event(EventType.EXECUTION_STARTED, at(1)),
        event(EventType.HUMAN_WAITING, at(2), "ask"),
        event(EventType.HUMAN_RESPONDED, at(3), "ask"),
        run=run,
    )
    assert run.status == ExecutionStatus.COMPLETED
    assert run.started_at == datetime.fromisoformat(at(1))


def test_a_restarted_node_forgets_its_last_error() -> None:
    _, nodes = folded(
        event(EventType.NODE_STARTED, at(1), "a"),
        event(EventType.NODE_FAILED, at(2), "a", NodeFailed(error="no", attempts=1)),
        event(EventType.NODE_STARTED, at(3), "a"),
    )
    assert (nodes["a"].status, nodes["a"].error, nodes["a"].finished_at) == (
        NodeStatus.RUNNING,
        None,
        None,
    )


# -- the writers' protocol on the database ------------------------------------------------


def numbered(count: int) -> list[RecordedEvent]:
    """A run's first ``count`` events: started, then nodes started and completed."""
    items = [event(EventType.EXECUTION_STARTED, T0)]
    for i in range(1, count):
        kind = EventType.NODE_STARTED if i % 2 else EventType.NODE_COMPLETED
        items.append(
            event(
                kind,
                at(i % 60),
                f"n{(i + 1) // 2}",
                NodeCompleted(output=i) if kind == EventType.NODE_COMPLETED else None,
            )
        )
    return [RecordedEvent(seq=i + 1, **e.model_dump()) for i, e in enumerate(items)]


@pytest.fixture
async def engines(clean_db: str) -> Any:
    """Two engines on one database: two processes' worth of connections."""
    first, second = create_engine(clean_db), create_engine(clean_db)
    yield first, second
    await first.dispose()
    await second.dispose()


async def new_execution(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        workflow = Workflow(workspace_id=DEFAULT_WORKSPACE_ID, name="w", definition={})
        session.add(workflow)
        await session.flush()
        execution = Execution(
            workspace_id=DEFAULT_WORKSPACE_ID,
            workflow_id=workflow.id,
            workflow_version=1,
            status=ExecutionStatus.RUNNING,
            input={},
        )
        session.add(execution)
        await session.commit()
        return execution.id


async def write(engine: AsyncEngine, execution_id: int, events: list[RecordedEvent]) -> int:
    async with session_factory(engine)() as session:
        execution = await lock(session, execution_id)
        assert execution is not None
        added = await append(session, execution, events, fold)
        await session.commit()
        return added


async def stored(engine: AsyncEngine, execution_id: int) -> list[int]:
    async with session_factory(engine)() as session:
        return list(
            await session.scalars(
                select(ExecutionEvent.seq)
                .where(ExecutionEvent.execution_id == execution_id)
                .order_by(ExecutionEvent.seq)
            )
        )


async def test_a_second_writer_waits_for_the_first_and_adds_only_the_rest(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = engines
    execution_id = await new_execution(first)
    second_is_locking = asyncio.Event()

    @sa_event.listens_for(second.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE EXECUTIONS"):
            second_is_locking.set()

    async with session_factory(first)() as session:
        execution = await lock(session, execution_id)
        assert execution is not None
        assert await append(session, execution, numbered(3), fold) == 3
        # The second writer asks for the lock while the first holds it, uncommitted.
        late = asyncio.create_task(write(second, execution_id, numbered(5)))
        await asyncio.wait_for(second_is_locking.wait(), 30)
        assert not late.done()
        await session.commit()
    assert await asyncio.wait_for(late, 30) == 2
    assert await stored(first, execution_id) == [1, 2, 3, 4, 5]


async def test_concurrent_writers_store_each_event_once(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = engines
    execution_id = await new_execution(first)
    for count in range(1, 16):
        # Both read the stream up to a point and write what they read, at the same time.
        added = await asyncio.gather(
            write(first, execution_id, numbered(count)),
            write(second, execution_id, numbered(count + 1)),
        )
        assert sum(added) in (1, 2)
    assert await stored(first, execution_id) == list(range(1, 17))
    async with session_factory(first)() as session:
        nodes = {
            n.node_id: n
            for n in await session.scalars(
                select(NodeRun).where(NodeRun.execution_id == execution_id)
            )
        }
        execution = await session.get(Execution, execution_id)
    assert execution is not None and execution.status == ExecutionStatus.RUNNING
    assert nodes["n1"].status == NodeStatus.COMPLETED and nodes["n1"].output == 2
    assert nodes["n7"].status == NodeStatus.COMPLETED


async def test_events_that_leave_a_gap_are_refused(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, _ = engines
    execution_id = await new_execution(first)
    await write(first, execution_id, numbered(2))
    with pytest.raises(GapInEvents):
        await write(first, execution_id, numbered(6)[3:])
    assert await stored(first, execution_id) == [1, 2]


async def test_a_whole_run_is_stored_in_one_insert_per_table(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """Events with and without a node, node runs that failed, completed or only
    started: every row as the fold says, and each table written by one statement."""
    first, _ = engines
    execution_id = await new_execution(first)
    run = [
        event(EventType.EXECUTION_STARTED, at(0)),
        event(EventType.NODE_STARTED, at(1), "a"),
        event(EventType.NODE_COMPLETED, at(2), "a", NodeCompleted(output={"x": [1, None]})),
        event(EventType.NODE_STARTED, at(3), "b"),
        event(EventType.NODE_RETRYING, at(4), "b", NodeRetrying(attempt=2, error="boom")),
        event(EventType.NODE_FAILED, at(5), "b", NodeFailed(error="boom again", attempts=2)),
        event(EventType.NODE_STARTED, at(6), "c"),
        event(EventType.EXECUTION_FAILED, at(7), None, ExecutionFailed(error="b failed")),
    ]
    events = [RecordedEvent(seq=i + 1, **e.model_dump()) for i, e in enumerate(run)]
    inserts: list[str] = []

    @sa_event.listens_for(first.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement.split()[2])

    assert await write(first, execution_id, events) == len(events)
    assert sorted(inserts) == ["execution_events", "node_runs"]

    expected_run, expected_nodes = folded(*events)
    async with session_factory(first)() as session:
        rows = list(
            await session.scalars(
                select(ExecutionEvent)
                .where(ExecutionEvent.execution_id == execution_id)
                .order_by(ExecutionEvent.seq)
            )
        )
        nodes = {
            n.node_id: n
            for n in await session.scalars(
                select(NodeRun).where(NodeRun.execution_id == execution_id)
            )
        }
        execution = await session.get(Execution, execution_id)
    assert [(r.seq, r.type, r.node_id, r.data) for r in rows] == [
        (e.seq, e.type, e.node_id, e.data) for e in events
    ]
    assert [r.ts for r in rows] == [datetime.fromisoformat(e.ts) for e in events]
    assert execution is not None and execution.status == expected_run.status
    assert execution.error == expected_run.error
    assert sorted(nodes) == ["a", "b", "c"]
    async with first.connect() as connection:
        without_output = await connection.scalars(
            text("SELECT node_id FROM node_runs WHERE execution_id = :id AND output IS NULL"),
            {"id": execution_id},
        )
        # No output is SQL NULL, as the ORM stored it, not a JSON null.
        assert sorted(without_output) == ["b", "c"]
    for node_id, expected in expected_nodes.items():
        stored_node = nodes[node_id]
        assert (
            stored_node.status,
            stored_node.attempts,
            stored_node.started_at,
            stored_node.finished_at,
            stored_node.output,
            stored_node.error,
            stored_node.reused,
        ) == (
            expected.status,
            expected.attempts,
            expected.started_at,
            expected.finished_at,
            expected.output,
            expected.error,
            expected.reused,
        ), node_id
