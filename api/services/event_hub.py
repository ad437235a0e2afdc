"""One stream subscription per execution per API process, fanned out to all watchers.

A ``Feed`` follows one run's Temporal workflow stream and keeps the events it
has seen, in order; every watcher of that execution reads from the same list
with its own cursor, so 1 or 1,000 watchers cost Temporal the same polls. A
watcher that (re)connects with ``after=N`` starts its cursor at N: it gets
every later event exactly once, in order. The feed ends at the terminal event;
if the run closed without one (terminated in Temporal), the feed asks
``refresh`` to record how it ended and delivers that closing event too.

The subscription follows continue-as-new to the chain's next run by itself.
Before a run continues as new it records its events and drops them from the
stream's retained log; a feed that was behind then sees a gap and fills it from
the record, so watchers still get every ``seq`` once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.metrics import count_feeds_of
from api.services import executions as execution_service
from infra.logging import get_logger
from infra.metrics import EVENTS_DELIVERED, WEBSOCKET_WATCHERS
from infra.models import Execution, ExecutionEvent
from infra.streams import follow_stream
from workflows.events import (
    EVENTS_TOPIC,
    TERMINAL_EVENTS,
    Event,
    RecordedEvent,
    recorded,
)
from workflows.status import FINISHED

log = get_logger("keel.events")

POLL_COOLDOWN = timedelta(milliseconds=10)
DRAIN_POLL_S = 0.05
START_POLL_S = 0.25  # how often a feed of a not-yet-started execution checks for its start


def public_event(execution_id: int, item: RecordedEvent) -> dict[str, Any]:
    """An event as clients see it (the contract's field order, with the execution id)."""
    return {
        "seq": item.seq,
        "type": item.type,
        "execution_id": execution_id,
        "node_id": item.node_id,
        "ts": item.ts,
        "data": item.data,
    }


async def stored_events(
    session: AsyncSession, execution_id: int, after: int
) -> list[RecordedEvent]:
    rows = await session.scalars(
        select(ExecutionEvent)
        .where(ExecutionEvent.execution_id == execution_id, ExecutionEvent.seq > after)
        .order_by(ExecutionEvent.seq)
    )
    return [execution_service.row_to_event(r) for r in rows]


class Feed:
    def __init__(self, execution_id: int) -> None:
        self.execution_id = execution_id
        self.events: list[RecordedEvent] = []
        self.texts: list[str] = []  # each event as JSON, made once for every watcher
        self.done = False
        self.error: str | None = None
        self.changed = asyncio.Condition()
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None

    async def add(self, items: list[RecordedEvent]) -> None:
        async with self.changed:
            for item in items:
                # Contiguity guard: a re-read never duplicates what is already here.
                if item.seq == len(self.events) + 1:
                    self.events.append(item)
                    self.texts.append(json.dumps(public_event(self.execution_id, item)))
                    if item.type in TERMINAL_EVENTS:
                        self.done = True
            self.changed.notify_all()

    async def finish(self, error: str | None = None) -> None:
        async with self.changed:
            self.done = True
            self.error = error
            self.changed.notify_all()


class Draining(Exception):
    """This API process is shutting down: the watcher has had every event it was going
    to get here and should resume elsewhere with ``after`` its last seq."""


class EventHub:
    def __init__(self, client: Client, sessions: async_sessionmaker[AsyncSession]) -> None:
        count_feeds_of(self)
        self.client = client
        self.sessions = sessions
        self.feeds: dict[int, Feed] = {}
        self.subscriptions_started = 0
        self.draining = False

    async def watch(self, execution: Execution, after: int) -> AsyncIterator[str]:
        """Every event of the execution with ``seq > after`` as JSON text, live, ending
        after the last. ``execution``: its row, just read by the caller. Raises Draining
        once the hub drains."""
        if self.draining:
            raise Draining
        execution_id = execution.id
        feed = self.feeds.get(execution_id)
        if feed is None:
            if execution.status in FINISHED:
                async with self.sessions() as session:
                    if await execution_service.has_terminal_event(session, execution_id):
                        for item in await stored_events(session, execution_id, after):
                            yield json.dumps(public_event(execution_id, item))
                            EVENTS_DELIVERED.inc()
                        return
            feed = self.feeds.get(execution_id)  # another watcher may have made it meanwhile
            if feed is None:
                feed = self.feeds[execution_id] = Feed(execution_id)
                feed.task = asyncio.create_task(self._follow(feed, execution.temporal_workflow_id))
                self.subscriptions_started += 1
        feed.watchers += 1
        WEBSOCKET_WATCHERS.inc()
        cursor = after
        try:

            def more_to_send() -> bool:
                return len(feed.events) > cursor or feed.done or self.draining

            while True:
                async with feed.changed:
                    await feed.changed.wait_for(more_to_send)
                    batch = feed.texts[cursor:]
                    finished = feed.done
                for text in batch:
                    yield text
                    EVENTS_DELIVERED.inc()
                cursor += len(batch)
                if finished and cursor >= len(feed.events):
                    if feed.error:
                        raise RuntimeError(feed.error)
                    return
                if self.draining:
                    raise Draining
        finally:
            WEBSOCKET_WATCHERS.dec()
            feed.watchers -= 1
            if feed.watchers == 0 and self.feeds.get(execution_id) is feed:
                # Nobody is left watching: stop following; the next watcher starts afresh.
                del self.feeds[execution_id]
                if feed.task and not feed.task.done():
                    feed.task.cancel()

    async def _follow(self, feed: Feed, run_key: str | None) -> None:
        """``run_key``: the run's Temporal workflow id if the execution has started."""
        try:
            if run_key is None:
                run_key = await self._wait_for_start(feed)

            # The record's events after the feed's, read when a poll failed and found
            # the run's end among them.
            recorded_rest: list[RecordedEvent] = []

            async def recorded_end() -> bool:
                async with self.sessions() as session:
                    rest = await stored_events(session, feed.execution_id, len(feed.events))
                if rest and rest[-1].type in TERMINAL_EVENTS:
                    recorded_rest[:] = rest
                    return True
                return False

            if run_key is not None:
                # A closed run's last events come from the record, below (read_closed). A
                # poll that fails once the record has the run's end (the run closed while
                # the poll waited for its next workflow task) ends the follow without
                # asking Temporal how the run ended, with the rest of the events in hand.
                async for batch in follow_stream(
                    self.client,
                    run_key,
                    EVENTS_TOPIC,
                    len(feed.events),
                    Event,
                    self.cooldown_s,
                    read_closed=False,
                    ended=recorded_end,
                ):
                    if batch[0].offset > len(feed.events):
                        await self._fill_gap(feed)
                    await feed.add([recorded(item.offset, item.data) for item in batch])
                    if feed.done:
                        return
            # The run closed (or never started) before the polls brought its last event.
            # The workflow records every event before it closes, so the rest is in the
            # record: reading the closed run's stream instead is a query that a worker
            # answers by replaying the whole run, and at one run at a time the last poll
            # mostly reaches a run that has just closed. A run closed without recording
            # (a terminate, say) is brought up to date from its stream by the refresh.
            if recorded_rest:
                await feed.add(recorded_rest)
            else:
                async with self.sessions() as session:
                    execution = await session.get(Execution, feed.execution_id)
                    if execution is not None:
                        await execution_service.refresh(session, self.client, execution)
                    await feed.add(
                        await stored_events(session, feed.execution_id, len(feed.events))
                    )
            await feed.finish()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("event feed failed", execution_id=feed.execution_id)
            await feed.finish(f"event stream failed: {exc}")

    def cooldown_s(self) -> float:
        """The pause between two polls of a feed."""
        return POLL_COOLDOWN.total_seconds()

    async def _fill_gap(self, feed: Feed) -> None:
        """Events the stream no longer retains (dropped at continue-as-new once recorded)."""
        async with self.sessions() as session:
            await feed.add(await stored_events(session, feed.execution_id, len(feed.events)))

    async def _wait_for_start(self, feed: Feed) -> str | None:
        """The run's Temporal workflow id once it has started; None if it ended unstarted."""
        while True:
            async with self.sessions() as session:
                execution = await session.get(Execution, feed.execution_id)
                if execution is None:
                    return None
                if execution.temporal_workflow_id:
                    return execution.temporal_workflow_id
                if execution.status in FINISHED:
                    return None
            await asyncio.sleep(START_POLL_S)

    async def drain(self, grace_s: float) -> None:
        """Before this process stops: every watcher is sent the events its feed already
        has and its stream ends with Draining; wait (at most ``grace_s``) until all are
        gone. New watchers are refused the same way."""
        self.draining = True
        for feed in list(self.feeds.values()):
            async with feed.changed:
                feed.changed.notify_all()
        deadline = asyncio.get_running_loop().time() + grace_s
        while any(feed.watchers for feed in self.feeds.values()):
            if asyncio.get_running_loop().time() > deadline:
                log.warning(
                    "watchers still connected after draining",
                    watchers=sum(feed.watchers for feed in self.feeds.values()),
                )
                return
            await asyncio.sleep(DRAIN_POLL_S)

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            if feed.task:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.task
        self.feeds.clear()
