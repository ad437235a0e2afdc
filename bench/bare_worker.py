"""The floor Keel's engine is measured against: hand-written Temporal workflows calling
no-op activities in the same shapes as the Keel graphs (a chain; one node, a fan-out,
a join), on their own task queue, in their own worker process.

    python -m bench.bare_worker --address 127.0.0.1:7233 --task-queue bench-bare \
        [--database-url sqlite+aiosqlite:///...]

The activity options mirror what Keel gives an agent node (start-to-close and
heartbeat timeouts, a retry policy) so both ask the same of Temporal per activity.

The "streamed" variants do the same plus what a Keel run asks of Temporal to be
watched live, with no Keel code: they publish the events a Keel run of that shape
publishes (execution.started; node.started, usage.recorded and node.completed per
node; execution.completed) into a Workflow Stream, which the load generator follows
with the SDK's own ``WorkflowStreamClient.subscribe`` until the last event.

The "recorded" variants do what the streamed ones do plus the database work of a Keel
run, written the plainest way (bench/bare_recorder.py): each node's activity adds the
node's usage row, and a local activity writes the run's record at its end. They are
started and watched through bench/bare_api.py (a plain ``POST`` and a WebSocket that
follows the stream), as Keel's runs are through Keel's API: bare Temporal doing
Keel's work, with none of Keel's code. They run outside the workflow sandbox on a task
queue of their own, as ``keel worker`` runs Keel's workflows; the other variants keep
the SDK's default, the sandbox.

Both chains can also be paced: each node's activity then lasts as long as a paced Keel
node's model call (no CPU, only time), so a watcher's polls land while it runs, as they
do with any real model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "bench-bare"
EVENTS_TOPIC = "events"
# The kinds of event a streamed run publishes (Keel's, named in words).
EXECUTION_STARTED = "execution started"
NODE_STARTED = "node started"
USAGE_RECORDED = "usage recorded"
NODE_COMPLETED = "node completed"
LAST_EVENT = "execution completed"
# The recorded variants' activities (bench/bare_recorder.py), by name: the workflows'
# module does not import that one.
LEDGER = "bench.ledger"
RECORD = "bench.record"


# The shapes' sizes, the same for Keel's graphs (bench.scenarios) and every bare variant:
# a chain of this many nodes; a diamond of one node, this many branches, a join.
CHAIN_LENGTH = 5
DIAMOND_WIDTH = 4


def recorded_queue(task_queue: str) -> str:
    """The task queue of the recorded variants, which run outside the sandbox."""
    return f"{task_queue}-recorded"


# The activities that run a bare run's nodes (their first argument: the node's name).
NOOP = "bench.noop"
PACED = "bench.paced"
BARE_NODE_ACTIVITIES = frozenset({NOOP, PACED})


@activity.defn(name=NOOP)
async def noop(node: str) -> str:
    return node


@activity.defn(name=PACED)
async def paced(node: str, seconds: float) -> str:
    """A node whose work takes ``seconds`` of time and no CPU, like a slow model's answer."""
    await asyncio.sleep(seconds)
    return node


def node_activity(work: str | Callable[..., Awaitable[str]], args: list[Any]) -> Awaitable[str]:
    """A node's activity, with the options Keel gives an agent node's."""
    return workflow.execute_activity(
        work,
        args=args,
        start_to_close_timeout=timedelta(minutes=5),
        heartbeat_timeout=timedelta(seconds=5),
        retry_policy=RetryPolicy(maximum_attempts=3),
    )


def call(node: str, pace_s: float = 0.0) -> Awaitable[str]:
    return node_activity(paced, [node, pace_s]) if pace_s else node_activity(noop, [node])


@workflow.defn(name="BareChain")
class BareChain:
    @workflow.run
    async def run(self, length: int, pace_s: float = 0.0) -> list[str]:
        done = []
        for i in range(length):
            done.append(await call(f"n{i}", pace_s))
        return done


@workflow.defn(name="BareDiamond")
class BareDiamond:
    @workflow.run
    async def run(self, width: int) -> list[str]:
        first = await call("split")
        middle = await asyncio.gather(*[call(f"b{i}") for i in range(width)])
        last = await call("join")
        return [first, *middle, last]


class _Streamed:
    """A run that publishes, per node, what a Keel run publishes."""

    def __init__(self, pace_s: float = 0.0) -> None:
        self.pace_s = pace_s  # how long each node's activity takes (0: no time at all)
        self.stream = WorkflowStream()
        self.events = self.stream.topic(EVENTS_TOPIC, type=dict)

    def emit(self, kind: str, node: str | None = None) -> dict[str, Any]:
        event = {"type": kind, "node_id": node, "ts": workflow.now().isoformat()}
        self.events.publish(event)
        return event

    def work(self, node: str) -> Awaitable[str]:
        """The node's activity."""
        return call(node, self.pace_s)

    async def node(self, node: str) -> str:
        self.emit(NODE_STARTED, node)
        done = await self.work(node)
        self.emit(USAGE_RECORDED, node)
        self.emit(NODE_COMPLETED, node)
        return done


@workflow.defn(name="BareStreamedChain")
class BareStreamedChain(_Streamed):
    @workflow.init
    def __init__(self, length: int, pace_s: float = 0.0) -> None:
        super().__init__(pace_s)

    @workflow.run
    async def run(self, length: int, pace_s: float = 0.0) -> list[str]:
        self.emit(EXECUTION_STARTED)
        done = [await self.node(f"n{i}") for i in range(length)]
        self.emit(LAST_EVENT)
        return done


@workflow.defn(name="BareStreamedDiamond")
class BareStreamedDiamond(_Streamed):
    @workflow.init
    def __init__(self, width: int) -> None:
        super().__init__()

    @workflow.run
    async def run(self, width: int) -> list[str]:
        self.emit(EXECUTION_STARTED)
        first = await self.node("split")
        middle = await asyncio.gather(*[self.node(f"b{i}") for i in range(width)])
        last = await self.node("join")
        self.emit(LAST_EVENT)
        return [first, *middle, last]


class _Recorded(_Streamed):
    """A streamed run that also writes what a Keel run writes (bench/bare_recorder.py):
    ``run`` names its execution row (``execution_id``, ``workspace_id``,
    ``workflow_id``)."""

    def __init__(self, run: dict[str, Any]) -> None:
        super().__init__()
        self.run_row = run
        self.published: list[dict[str, Any]] = []

    def emit(self, kind: str, node: str | None = None) -> dict[str, Any]:
        event = super().emit(kind, node)
        self.published.append(event)  # for the record at the end
        return event

    def work(self, node: str) -> Awaitable[str]:
        return node_activity(LEDGER, [self.run_row, node])

    async def finish(self) -> None:
        self.emit(LAST_EVENT)
        await workflow.execute_local_activity(
            RECORD,
            args=[self.run_row, self.published],
            start_to_close_timeout=timedelta(seconds=30),
        )


@workflow.defn(name="BareRecordedChain")
class BareRecordedChain(_Recorded):
    @workflow.init
    def __init__(self, length: int, run: dict[str, Any]) -> None:
        super().__init__(run)

    @workflow.run
    async def run(self, length: int, run: dict[str, Any]) -> list[str]:
        self.emit(EXECUTION_STARTED)
        done = [await self.node(f"n{i}") for i in range(length)]
        await self.finish()
        return done


@workflow.defn(name="BareRecordedDiamond")
class BareRecordedDiamond(_Recorded):
    @workflow.init
    def __init__(self, width: int, run: dict[str, Any]) -> None:
        super().__init__(run)

    @workflow.run
    async def run(self, width: int, run: dict[str, Any]) -> list[str]:
        self.emit(EXECUTION_STARTED)
        first = await self.node("split")
        middle = await asyncio.gather(*[self.node(f"b{i}") for i in range(width)])
        last = await self.node("join")
        await self.finish()
        return [first, *middle, last]


async def serve(
    address: str, namespace: str, task_queue: str, database_url: str | None = None
) -> None:
    # Imported here, not at the top: the sandbox re-imports this module for every run.
    from infra.logging import configure_logging, get_logger

    configure_logging()
    client = await Client.connect(address, namespace=namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as workers:
        await workers.enter_async_context(
            Worker(
                client,
                task_queue=task_queue,
                workflows=[BareChain, BareDiamond, BareStreamedChain, BareStreamedDiamond],
                activities=[noop, paced],
            )
        )
        if database_url:
            from bench.bare_recorder import Recorder  # not in the sandbox's module: see there
            from infra.db import create_engine

            engine = create_engine(database_url)
            workers.push_async_callback(engine.dispose)
            recorder = Recorder(engine)
            # Run as `keel worker` runs Keel's workflows, outside the sandbox: what this
            # variant measures against Keel is Keel's own code, not the sandbox's cost.
            await workers.enter_async_context(
                Worker(
                    client,
                    task_queue=recorded_queue(task_queue),
                    workflows=[BareRecordedChain, BareRecordedDiamond],
                    activities=[recorder.ledger, recorder.record],
                    workflow_runner=UnsandboxedWorkflowRunner(),
                )
            )
        # bench.platform waits for this line.
        get_logger("keel.bench").info("bare worker started", task_queue=task_queue)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default=TASK_QUEUE)
    parser.add_argument("--database-url", help="Keel's database: runs the recorded variants")
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.namespace, args.task_queue, args.database_url))


if __name__ == "__main__":
    main()
