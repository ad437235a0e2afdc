"""Driving Keel the way a client does: REST for setup and starts, a WebSocket per watcher.

Times that are compared with Temporal's history are wall-clock (``time.time()``:
the same machine clock the dev server stamps its events with); durations inside
this process are the same clock, so the two compare directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
import websockets
import websockets.asyncio.client
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError

from bench.bare_worker import BARE_NODE_ACTIVITIES
from workflows.contracts import ActivityName
from workflows.events import EventType

TERMINAL = {
    EventType.EXECUTION_COMPLETED,
    EventType.EXECUTION_FAILED,
    EventType.EXECUTION_CANCELLED,
}
RUN_TIMEOUT_S = 120.0


def chain_edges(node_ids: list[str]) -> list[dict[str, str]]:
    path = ["START", *node_ids, "END"]
    return [{"from": a, "to": b} for a, b in pairwise(path)]


def chain(agent_id: int, length: int) -> dict[str, Any]:
    ids = [f"n{i}" for i in range(length)]
    return {
        "nodes": [{"id": n, "type": "agent", "agent_id": agent_id, "input": n} for n in ids],
        "edges": chain_edges(ids),
    }


def diamond(agent_id: int, width: int) -> dict[str, Any]:
    branches = [f"b{i}" for i in range(width)]
    nodes = [
        {"id": n, "type": "agent", "agent_id": agent_id, "input": n}
        for n in ("split", *branches, "join")
    ]
    edges = [{"from": "START", "to": "split"}, {"from": "join", "to": "END"}]
    for b in branches:
        edges += [{"from": "split", "to": b}, {"from": b, "to": "join"}]
    return {"nodes": nodes, "edges": edges}


def human(timeout_s: float = 86_400) -> dict[str, Any]:
    return {
        "nodes": [{"id": "approve", "type": "human", "prompt": "ok?", "timeout_s": timeout_s}],
        "edges": chain_edges(["approve"]),
    }


def data(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()["data"]


@dataclass
class Received:
    type: str
    node_id: str | None
    seq: int
    at: float  # time.time() when this process had the message


@dataclass
class Run:
    execution_id: int
    temporal_id: str
    sent: float  # before the POST
    posted: float  # POST answered
    events: list[Received] = field(default_factory=list)

    def first(self, kind: str) -> Received | None:
        return next((e for e in self.events if e.type == kind), None)

    @property
    def ended(self) -> Received | None:
        return next((e for e in self.events if e.type in TERMINAL), None)


class Keel:
    def __init__(self, http: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> None:
        self.http = http  # sends the credential (``headers``) with every request
        self.ws_base = base_url.replace("http://", "ws://")
        self.headers = headers

    def connect(self, execution_id: int) -> websockets.asyncio.client.connect:
        """A WebSocket to the run's events, with the credential."""
        return websockets.connect(
            self.ws_url(execution_id),
            open_timeout=60,
            max_queue=None,
            additional_headers=self.headers,
        )

    async def agent(self, name: str, **fields: Any) -> int:
        body = {"name": name, "provider": "fake", "model": "fake-echo", **fields}
        return int(data(await self.http.post("/api/v1/Agent/", json=body), 201)["id"])

    async def workflow(self, name: str, definition: dict[str, Any]) -> int:
        created = data(
            await self.http.post(
                "/api/v1/Workflow/", json={"name": name, "definition": definition}
            ),
            201,
        )
        data(await self.http.post(f"/api/v1/Workflow/{created['id']}/publish"))
        return int(created["id"])

    async def create(self, workflow_id: int, start: bool) -> dict[str, Any]:
        return dict(
            data(
                await self.http.post(
                    "/api/v1/Execution/",
                    json={"workflow_id": workflow_id, "input": {"bench": True}, "start": start},
                ),
                201,
            )
        )

    async def start(self, execution_id: int) -> dict[str, Any]:
        return dict(data(await self.http.post(f"/api/v1/Execution/{execution_id}/start")))

    def ws_url(self, execution_id: int, after: int = 0) -> str:
        return f"{self.ws_base}/api/v1/Execution/ws/{execution_id}?after={after}"

    async def watch(
        self, execution_id: int, into: list[Received], connected: asyncio.Event | None = None
    ) -> int | None:
        """Append every event the WebSocket sends until the terminal one; the close code."""
        async with self.connect(execution_id) as ws:
            if connected is not None:
                connected.set()
            async for message in ws:
                at = time.time()
                item = json.loads(message)
                into.append(Received(item["type"], item.get("node_id"), item["seq"], at))
                if item["type"] in TERMINAL:
                    break
            return ws.close_code

    async def run(self, workflow_id: int) -> Run:
        """POST start:true, then watch until the terminal event arrives."""
        sent = time.time()
        execution = await self.create(workflow_id, start=True)
        run = Run(execution["id"], execution["temporal"]["workflow_id"], sent, time.time())
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await self.watch(run.execution_id, run.events)
        if run.ended is None or run.ended.type != EventType.EXECUTION_COMPLETED:
            raise RuntimeError(
                f"execution {run.execution_id} did not complete: {[e.type for e in run.events]}"
            )
        return run


def event_time(event: Any) -> float:
    """A history event's time (the dev server's wall clock), in seconds since the epoch."""
    return float(event.event_time.seconds) + event.event_time.nanos / 1e9


@dataclass
class NodeTask:
    """When the server recorded a node's activity as completed, and when the workflow task
    that took that completion (and published the node's events) started and completed:
    history event times, the dev server's wall clock on this machine."""

    finished: float
    task_started: float
    task_completed: float


def _node_of(attributes: Any) -> str | None:
    """The node an activity ran for: a Keel model call (activity id ``<node>/...``) or a
    bare run's node (its first argument); None for any other activity."""
    name = attributes.activity_type.name
    if name == ActivityName.LLM_CALL:
        return str(attributes.activity_id.split("/")[0])
    if name in BARE_NODE_ACTIVITIES:
        return str(json.loads(attributes.input.payloads[0].data))
    return None


async def node_tasks(client: Client, temporal_id: str) -> dict[str, NodeTask]:
    """Node id -> its ``NodeTask``, for a Keel run's model calls or a bare run's nodes. The
    task that took an activity's completion is the first one after it in the history:
    what happens while a task runs is written after that task completes."""
    events = list((await client.get_workflow_handle(temporal_id).fetch_history()).events)
    nodes: dict[int, str] = {}
    tasks: dict[str, NodeTask] = {}
    for at, event in enumerate(events):
        if event.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            node = _node_of(event.activity_task_scheduled_event_attributes)
            if node is not None:
                nodes[event.event_id] = node
        elif event.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            node = nodes.get(event.activity_task_completed_event_attributes.scheduled_event_id)
            after = events[at:]
            started = _first(after, HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_STARTED)
            completed = _first(after, HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
            if node is not None and started is not None and completed is not None:
                tasks[node] = NodeTask(event_time(event), started, completed)
    return tasks


def _first(events: list[HistoryEvent], kind: int) -> float | None:
    return next((event_time(e) for e in events if e.event_type == kind), None)


async def history_shape(client: Client, temporal_id: str) -> dict[str, int]:
    """How much Temporal history one run made: events, workflow tasks, activities."""
    history = await client.get_workflow_handle(temporal_id).fetch_history()
    kinds = [e.event_type for e in history.events]
    return {
        "events": len(kinds),
        "workflow tasks": kinds.count(HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        "activities": kinds.count(HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
        "updates": kinds.count(HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED),
    }


# What asks Temporal for a workflow task, besides a watcher's poll: the run's start and a
# node's activity ending. (A poll is an Update, which leaves no event before the task
# that takes it.)
_RUN_CAUSES = frozenset(
    {
        HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        HistoryEventType.EVENT_TYPE_TIMER_FIRED,
        HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
    }
)
FOR_THE_RUN = "for the run (its start, a node's end)"
POLL_WAITED = "only for a poll, accepted to wait"
POLL_ANSWERED = "only for a poll, answered at once"
TASK_CAUSES = (FOR_THE_RUN, POLL_WAITED, POLL_ANSWERED)


def task_causes(events: Iterable[HistoryEvent]) -> Counter[str]:
    """What asked for each completed workflow task of one run: the run itself (its start,
    a node's activity ending; a poll that arrived meanwhile rides along for free), or only
    a watcher's poll, which the task either accepted to wait for events or answered at
    once with events that were ready."""
    counts: Counter[str] = Counter()
    caused_by_run = False
    task: str | None = None  # the last completed task's cause, until its commands are read
    answered = False
    for event in events:
        kind = event.event_type
        if kind in _RUN_CAUSES:
            caused_by_run = True
        elif kind == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            answered = True
        elif kind == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            if task is not None:
                counts[task] += 1
            task = FOR_THE_RUN if caused_by_run else POLL_WAITED
            caused_by_run = answered = False
        elif kind == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and task is not None:
            # The last task's commands (an update it accepted, or answered) are all read.
            counts[POLL_ANSWERED if task == POLL_WAITED and answered else task] += 1
            task = None
    if task is not None:
        counts[POLL_ANSWERED if task == POLL_WAITED and answered else task] += 1
    return counts


async def tasks_per_run(client: Client, temporal_ids: list[str]) -> dict[str, float]:
    """``task_causes`` of these runs' histories, per run."""
    if not temporal_ids:
        return {}
    total: Counter[str] = Counter()
    for temporal_id in temporal_ids:
        handle = client.get_workflow_handle(temporal_id)
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()  # its last workflow task is in the history
        total += task_causes((await handle.fetch_history()).events)
    return {cause: total[cause] / len(temporal_ids) for cause in TASK_CAUSES}
