"""The activity that keeps a run's database record: not a node activity, the workflow
calls it after its milestones (a human node waits, the run ends).

The workflow hands over the events not yet recorded (``SyncInput.events``) and runs it
as a local activity, inside the workflow task that reached the milestone: no activity
task, no extra workflow task, no query to read the stream back. Runs recorded before
that call it as an ordinary activity without events, and it reads the stream."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from infra.execution_store import append, last_seq, lock
from infra.logging import get_logger
from infra.metrics import count_recorded
from infra.streams import decode_wire_item, read_stream
from workflows.contracts import ActivityName, StreamItem, SyncInput
from workflows.errors import ErrorType
from workflows.events import (
    EVENTS_TOPIC,
    Event,
    RecordedEvent,
    recorded,
)
from workflows.record import completed_durations_s, fold
from workflows.status import FINISHED

log = get_logger("keel.activity")


async def read_events(client: Client, temporal_workflow_id: str, after: int) -> list[RecordedEvent]:
    """The run's events with ``seq > after``, as retained in its stream now."""
    items = await read_stream(client, temporal_workflow_id, EVENTS_TOPIC, after, Event)
    return [recorded(item.offset, item.data) for item in items]


def handed_over(client: Client, items: list[StreamItem]) -> list[RecordedEvent]:
    """The events the workflow handed over, decoded as a read of the stream decodes them."""
    return [recorded(item.offset, decode_wire_item(client, item.data, Event)) for item in items]


class RecordActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn(name=ActivityName.SYNC_EXECUTION.value)
    async def sync_execution(self, params: SyncInput) -> int:
        """Fold the run's events so far into its database record; returns events added.
        Follows the writers' protocol of infra.execution_store (read, lock, append)."""
        temporal_workflow_id = activity.info().workflow_id
        if temporal_workflow_id is None:
            raise RuntimeError("sync_execution runs only inside an execution workflow")
        async with self.sessions() as session:
            after = await last_seq(session, params.execution_id)
            if params.events is None:
                events = await read_events(activity.client(), temporal_workflow_id, after)
            elif after < params.after:
                raise ApplicationError(
                    f"the record ends at seq {after}, the workflow recorded up to {params.after}",
                    type=ErrorType.RECORD_BEHIND.value,
                    non_retryable=True,
                )
            else:
                events = handed_over(activity.client(), params.events)
            execution = await lock(session, params.execution_id)
            if execution is None:
                log.warning(
                    "execution row is gone; nothing to record", execution_id=params.execution_id
                )
                return 0
            if execution.temporal_workflow_id is None:
                # The API started the run but died (or lost its database) before
                # recording it; without the id a watcher's feed would wait forever.
                execution.temporal_workflow_id = temporal_workflow_id
            # The run recording is the chain's current one (after a continue-as-new too):
            # the record points at it without waiting for the API to look.
            execution.temporal_run_id = activity.info().workflow_run_id
            before = execution.status
            added = await append(session, execution, events, fold)
            await session.commit()
            count_recorded(
                completed_durations_s(events[len(events) - added :]),
                before,
                execution.status,
                FINISHED,
            )
            return added
