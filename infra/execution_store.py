"""The database record of a run: its events, and the rows folded from them.

Two processes write an execution's record: the worker (the ``sync_execution``
activity, after the workflow's milestones) and the API (``refresh``, when
Temporal says a run closed without recording how, e.g. an operator terminated
it; and the cancel of a run that never started). They follow one protocol, so
they serialize instead of racing:

1. Read the stream outside any transaction (``last_seq`` may be stale: that is
   fine, the stream is append-only and re-reading is harmless).
2. ``lock`` the execution row in a new transaction: its first statement is a write, so it takes the
   row's lock on MySQL/MariaDB and the database's write lock on SQLite (waiting
   for the other writer to commit), and every read after it is a locking read,
   so it sees what the other writer committed.
3. ``append`` the events newer than the stored ``seq`` and fold them into the
   rows (the fold is given by the caller: ``workflows.record.fold``), then commit.

Events already stored are skipped, so a retried or repeated write changes
nothing; events always extend the stored ones without a gap.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.models import Execution, ExecutionEvent, NodeRun


class StoredEvent(Protocol):
    """What is stored of an event (``workflows.events.RecordedEvent`` has it)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def ts(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


E = TypeVar("E", bound=StoredEvent)
# Folds events into the execution row and its node runs (keyed by node id), making a
# node run with the given factory when a node is seen for the first time.
Fold = Callable[
    [Execution, MutableMapping[str, NodeRun], Sequence[E], Callable[[str], NodeRun]], None
]


class GapInEvents(RuntimeError):
    """Events to store do not follow the stored ones: a bug, never settled by skipping."""


async def last_seq(session: AsyncSession, execution_id: int, *, locking: bool = False) -> int:
    """The newest stored event's seq (0: none); ``locking``: read as committed (under
    ``lock``), whatever the transaction's snapshot."""
    query = select(func.max(ExecutionEvent.seq)).where(ExecutionEvent.execution_id == execution_id)
    value = await session.scalar(query.with_for_update() if locking else query)
    return int(value or 0)


async def lock(session: AsyncSession, execution_id: int) -> Execution | None:
    """Start a new transaction holding the execution's write lock until it ends, and
    return the row as committed (None if it is gone). Whatever the session had not
    committed is rolled back first: the lock must be the transaction's first statement."""
    await session.rollback()
    take_lock = (
        update(Execution).where(Execution.id == execution_id).values(status=Execution.status)
    )
    execution: Execution | None
    if session.get_bind().dialect.update_returning:
        # SQLite: one statement, so one round trip fewer while its one write lock is held.
        execution = await session.scalar(
            take_lock.returning(Execution).execution_options(populate_existing=True)
        )
        return execution
    await session.execute(take_lock.execution_options(synchronize_session=False))
    execution = await session.scalar(
        select(Execution)
        .where(Execution.id == execution_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return execution


async def append(
    session: AsyncSession, execution: Execution, events: Sequence[E], fold: Fold[E]
) -> int:
    """Store the events newer than the stored ones and fold them in; the caller holds
    ``lock`` and commits. Returns how many were new."""
    done = await last_seq(session, execution.id, locking=True)
    fresh = [e for e in events if e.seq > done]
    if not fresh:
        return 0
    if [e.seq for e in fresh] != list(range(done + 1, done + 1 + len(fresh))):
        raise GapInEvents(
            f"execution {execution.id}: events {[e.seq for e in fresh]} do not follow seq {done}"
        )
    nodes = {
        run.node_id: run
        for run in await session.scalars(
            select(NodeRun)
            .where(NodeRun.execution_id == execution.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    # New rows go in as one multi-row insert per table, not as ORM objects: the ORM
    # inserts those one statement per row to learn each id (on SQLite and MySQL alike),
    # which nothing here needs. A chain of five nodes made 22 inserts at its end.
    await session.execute(
        # render_nulls: rows with a None (an event without a node) stay in the one batch.
        insert(ExecutionEvent).execution_options(render_nulls=True),
        [
            {
                "execution_id": execution.id,
                "seq": item.seq,
                "type": str(item.type),
                "node_id": item.node_id,
                "ts": datetime.fromisoformat(item.ts),
                "data": item.data,
            }
            for item in fresh
        ],
    )
    fold(execution, nodes, fresh, _new_node_run(execution.id))
    new_runs = [_row(run) for run in nodes.values() if run.id is None]
    if new_runs:
        await session.execute(insert(NodeRun).execution_options(render_nulls=True), new_runs)
    return len(fresh)


def _new_node_run(execution_id: int) -> Callable[[str], NodeRun]:
    # ``reused`` is set here because the row is inserted with every column given.
    return lambda node_id: NodeRun(execution_id=execution_id, node_id=node_id, reused=False)


# Every column of a node run but its id, which the database assigns.
_NODE_RUN_FIELDS = [attr.key for attr in inspect(NodeRun).column_attrs if attr.key != "id"]


def _row(run: NodeRun) -> dict[str, Any]:
    return {key: getattr(run, key) for key in _NODE_RUN_FIELDS}
