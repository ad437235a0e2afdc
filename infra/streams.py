"""Reading a run's events out of its Temporal workflow stream.

``read_events`` uses the stream's poll *query*: it answers at once with what is
retained (open or closed run alike), which suits "give me everything after N".
Live following is ``WorkflowStreamClient.subscribe`` (long-poll updates) in the
API's event hub.
"""

from __future__ import annotations

import base64
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.workflow_streams import PollInput, PollResult

# The stream's documented query for reading retained items without waiting.
POLL_QUERY = "__temporal_workflow_stream_poll"


def to_event(offset: int, data: Any) -> dict[str, Any]:
    """A stream item as a watcher sees it: ``seq`` is the 1-based stream position."""
    if not isinstance(data, dict):
        data = {"type": "unknown", "data": {"value": data}}
    return {"seq": offset + 1, **data}


def _decode(client: Client, wire: str) -> Any:
    payload = Payload()
    payload.ParseFromString(base64.b64decode(wire))
    return client.data_converter.payload_converter.from_payload(payload)


async def read_events(client: Client, workflow_id: str, after: int = 0,
                      run_id: str | None = None) -> list[dict[str, Any]]:
    """Every retained event with ``seq > after``, in order."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    events: list[dict[str, Any]] = []
    offset = after
    while True:
        result = await handle.query(
            POLL_QUERY, PollInput(topics=[], from_offset=offset), result_type=PollResult
        )
        events.extend(to_event(item.offset, _decode(client, item.data))
                      for item in result.items)
        offset = result.next_offset
        if not result.more_ready:
            return events
