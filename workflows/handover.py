"""The hand-over between two Temporal runs of one execution (continue-as-new).

A long run continues as new between two supersteps. What the next run needs is
where the graph stands, not how it got there: LangGraph's checkpoint after the
last superstep (every channel's value, which nodes have seen which versions, so
the next nodes and half-passed joins are exactly as they were), and the visit
count of every node (memo keys and loop bounds count visits). The new run resumes
the graph from that checkpoint, so its cost does not depend on how long the
execution has been running.

``Handover`` is LangGraph's own checkpointer interface, holding one checkpoint:
the graph is compiled with it, runs with ``durability="exit"`` (nothing is saved
while it runs) and is stopped with LangGraph's cooperative drain, which saves the
checkpoint on the way out. Only LangGraph's own serializer reads and writes it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from workflows.contracts import GraphPosition

THREAD = "run"  # the one thread a run's graph has
_SERDE = JsonPlusSerializer()


class Handover(BaseCheckpointSaver[int]):
    """Holds the graph's latest checkpoint in memory (never more than one)."""

    def __init__(self, position: GraphPosition | None = None) -> None:
        super().__init__(serde=_SERDE)
        self.held: CheckpointTuple | None = None
        if position is not None:
            checkpoint, metadata = _SERDE.loads_typed(
                (position.encoding, base64.b64decode(position.checkpoint))
            )
            self.held = CheckpointTuple(_config(checkpoint["id"]), checkpoint, metadata)

    def position(self, visits: dict[str, int], last_finished: str | None) -> GraphPosition:
        """Where the graph stopped, to carry into the next run."""
        if self.held is None:
            raise RuntimeError("the graph stopped without saving where it stood")
        if self.held.pending_writes:
            raise RuntimeError("the graph stopped inside a superstep")
        encoding, blob = _SERDE.dumps_typed((self.held.checkpoint, self.held.metadata))
        return GraphPosition(
            encoding=encoding,
            checkpoint=base64.b64encode(blob).decode(),
            visits=dict(visits),
            last_finished=last_finished,
        )

    # -- LangGraph's checkpointer interface ---------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.held

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.held

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = _config(checkpoint["id"])
        self.held = CheckpointTuple(saved, checkpoint, metadata, None, [])
        return saved

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if self.held is not None and writes:
            pending = [
                *(self.held.pending_writes or []),
                *((task_id, channel, value) for channel, value in writes),
            ]
            self.held = self.held._replace(pending_writes=pending)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from ([self.held] if self.held else [])

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config):
            yield item


def _config(checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    }
