"""The floor Keel's engine is measured against: hand-written Temporal workflows calling
no-op activities in the same shapes as the Keel graphs (a chain; one node, a fan-out,
a join), on their own task queue, in their own worker process.

    python -m bench.bare_worker --address 127.0.0.1:7233 --task-queue bench-bare

The activity options mirror what Keel gives an agent node (start-to-close and
heartbeat timeouts, a retry policy) so both ask the same of Temporal per activity.

The "streamed" variants do the same plus what a Keel run asks of Temporal to be
watched live, with no Keel code: they publish the events a Keel run of that shape
publishes (execution.started; node.started, usage.recorded and node.completed per
node; execution.completed) into a Workflow Stream, which the load generator follows
with the SDK's own ``WorkflowStreamClient.subscribe`` until the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.worker import Worker

TASK_QUEUE = "bench-bare"
EVENTS_TOPIC = "events"
LAST_EVENT = "execution completed"


@activity.defn(name="bench.noop")
async def noop(node: str) -> str:
    return node


def call(node: str) -> Awaitable[str]:
    return workflow.execute_activity(
        noop,
        node,
        start_to_close_timeout=timedelta(minutes=5),
        heartbeat_timeout=timedelta(seconds=5),
        retry_policy=RetryPolicy(maximum_attempts=3),
    )


@workflow.defn(name="BareChain")
class BareChain:
    @workflow.run
    async def run(self, length: int) -> list[str]:
        done = []
        for i in range(length):
            done.append(await call(f"n{i}"))
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

    def __init__(self) -> None:
        self.stream = WorkflowStream()
        self.events = self.stream.topic(EVENTS_TOPIC, type=dict)

    def emit(self, kind: str, node: str | None = None) -> None:
        self.events.publish({"type": kind, "node_id": node, "ts": workflow.now().isoformat()})

    async def node(self, node: str) -> str:
        self.emit("node started", node)
        done = await call(node)
        self.emit("usage recorded", node)
        self.emit("node completed", node)
        return done


@workflow.defn(name="BareStreamedChain")
class BareStreamedChain(_Streamed):
    @workflow.init
    def __init__(self, length: int) -> None:
        super().__init__()

    @workflow.run
    async def run(self, length: int) -> list[str]:
        self.emit("execution started")
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
        self.emit("execution started")
        first = await self.node("split")
        middle = await asyncio.gather(*[self.node(f"b{i}") for i in range(width)])
        last = await self.node("join")
        self.emit(LAST_EVENT)
        return [first, *middle, last]


async def serve(address: str, namespace: str, task_queue: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[BareChain, BareDiamond, BareStreamedChain, BareStreamedDiamond],
        activities=[noop],
    ):
        print("bare worker started", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default=TASK_QUEUE)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.namespace, args.task_queue))


if __name__ == "__main__":
    main()
