"""Reading a run's Temporal workflow stream at once, without waiting for new items.

The SDK's public reader, ``WorkflowStreamClient.subscribe``, follows a stream
live: on an open run it long-polls with an *update* (which waits for new items
and adds to the run's history). "Give me everything after N, now" needs the
stream's poll *query*, which answers at once with what is retained, open or
closed run alike. The SDK documents that query (``WorkflowStream``'s docstring)
but exports neither its name nor the decoding of its wire items, so this module
is the one place Keel relies on them; tests/infra/test_streams.py pins both
against the installed SDK. Live following stays with ``subscribe`` (the API's
event hub).
"""

from __future__ import annotations

import base64
from typing import TypeVar

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.workflow_streams import PollInput, PollResult, WorkflowStreamItem

# The stream's query for reading retained items without waiting (private to the SDK).
POLL_QUERY = "__temporal_workflow_stream_poll"

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
