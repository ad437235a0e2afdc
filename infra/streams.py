"""Reading a run's Temporal workflow stream: at once (``read_stream``) or live
(``follow_stream``).

The SDK's public reader, ``WorkflowStreamClient.subscribe``, follows a stream
live: on an open run it long-polls with an *update* (which waits for new items
and adds to the run's history). "Give me everything after N, now" needs the
stream's poll *query*, which answers at once with what is retained, open or
closed run alike. The SDK documents that query (``WorkflowStream``'s docstring)
but exports neither its name nor the decoding of its wire items, so this module
is the one place Keel relies on them; tests/infra/test_streams.py pins both
against the installed SDK.

``follow_stream`` is ``subscribe``'s protocol (the same update, the same handling
of continue-as-new, a truncated offset and a closed run) with three differences that
cost Temporal less: the update is sent waiting for its *result* (one
``UpdateWorkflowExecution`` request, where ``subscribe`` sends one to have it
accepted and a ``PollWorkflowExecutionUpdate`` for its result); the pause between
two polls is asked of the caller each time, so it can follow its load; and a caller
that has a closed run's events elsewhere can skip reading them from the stream, a
query that a worker answers by replaying the whole run.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.contrib.workflow_streams import PollInput, PollResult, WorkflowStreamItem
from temporalio.service import RPCError

# The stream's query (and update: same name) for reading retained items (private to
# the SDK).
POLL_QUERY = "__temporal_workflow_stream_poll"
# The failure types of a poll update (private to the SDK): the offset asked for was
# dropped from the stream; the run is handing over to its continue-as-new successor.
TRUNCATED_OFFSET = "TruncatedOffset"
STREAM_DRAINING = "StreamDraining"
CLOSED = frozenset(
    {
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
    }
)

# The pauses before polling again a run that refused a poll, doubling up to the max.
REFUSED_BACKOFF_FIRST_S = 0.2
REFUSED_BACKOFF_MAX_S = 5.0

T = TypeVar("T")


def decode_wire_item(client: Client, wire: str, result_type: type[T]) -> T:
    """A poll result item's ``data``: base64 of a serialized ``Payload`` (SDK wire form)."""
    payload = Payload()
    payload.ParseFromString(base64.b64decode(wire))
    value: T = client.data_converter.payload_converter.from_payload(payload, result_type)
    return value


async def read_stream(
    client: Client,
    temporal_workflow_id: str,
    topic: str,
    after: int,
    result_type: type[T],
    run_id: str | None = None,
) -> list[WorkflowStreamItem[T]]:
    """Every retained item of ``topic`` at offset ``>= after``, in order."""
    handle = client.get_workflow_handle(temporal_workflow_id, run_id=run_id)
    items: list[WorkflowStreamItem[T]] = []
    offset = after
    while True:
        result = await handle.query(
            POLL_QUERY, PollInput(topics=[topic], from_offset=offset), result_type=PollResult
        )
        items.extend(
            WorkflowStreamItem(
                topic=item.topic,
                offset=item.offset,
                data=decode_wire_item(client, item.data, result_type),
            )
            for item in result.items
        )
        offset = result.next_offset
        if not result.more_ready:
            return items


async def follow_stream(
    client: Client,
    temporal_workflow_id: str,
    topic: str,
    after: int,
    result_type: type[T],
    cooldown_s: Callable[[], float],
    read_closed: bool = True,
    ended: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[list[WorkflowStreamItem[T]]]:
    """Every item of ``topic`` at offset ``>= after``, live, one batch per poll, across
    continue-as-new, until the chain's last run has closed and its retained items are
    read. ``cooldown_s()``: the pause after a poll that left nothing more ready.
    ``read_closed=False``: end once the last run has closed, without reading what its
    stream retains beyond the polls (the caller reads it elsewhere). ``ended()``: asked
    when a poll fails, before Temporal is asked why; True (the caller knows the chain
    has ended, and has its last items elsewhere) ends the follow at once."""
    offset = after
    handle = client.get_workflow_handle(temporal_workflow_id)  # the chain's current run
    refused_backoff = REFUSED_BACKOFF_FIRST_S
    while True:
        run_id: str | None = None
        try:
            update = await handle.start_update(
                POLL_QUERY,
                PollInput(topics=[topic], from_offset=offset),
                wait_for_stage=WorkflowUpdateStage.COMPLETED,
                result_type=PollResult,
            )
            run_id = update.workflow_run_id
            result = await update.result()
        except (
            WorkflowUpdateFailedError,
            WorkflowUpdateRPCTimeoutOrCancelledError,
            RPCError,
        ) as err:
            if isinstance(err.__cause__, asyncio.CancelledError):
                raise err.__cause__ from None
            cause_type = (
                getattr(err.cause, "type", None)
                if isinstance(err, WorkflowUpdateFailedError)
                else None
            )
            if cause_type == TRUNCATED_OFFSET:
                offset = 0  # from what is retained; the caller sees the gap
                continue
            if cause_type == STREAM_DRAINING:
                await asyncio.sleep(cooldown_s())  # until the poll lands on the next run
                continue
            if ended is not None and await ended():
                return
            try:
                described = await client.get_workflow_handle(
                    temporal_workflow_id, run_id=run_id
                ).describe()
            except RPCError:
                raise err from None
            if described.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
                continue
            if described.status in CLOSED and described.run_id:
                if read_closed:
                    rest = await read_stream(
                        client, temporal_workflow_id, topic, offset, result_type, described.run_id
                    )
                    if rest:
                        yield rest
                return
            if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
                continue  # a long poll's request timed out: poll again
            if isinstance(err, RPCError):
                # The run is open but refused the poll for now (its workflow task is being
                # retried after a worker was lost, say): poll again, less and less often.
                await asyncio.sleep(refused_backoff)
                refused_backoff = min(refused_backoff * 2, REFUSED_BACKOFF_MAX_S)
                continue
            raise
        refused_backoff = REFUSED_BACKOFF_FIRST_S
        items = [
            WorkflowStreamItem(
                topic=item.topic,
                offset=item.offset,
                data=decode_wire_item(client, item.data, result_type),
            )
            for item in result.items
        ]
        if items:
            yield items
        offset = result.next_offset
        if not result.more_ready:
            await asyncio.sleep(cooldown_s())
