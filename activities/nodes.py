"""The activities the execution workflow calls. Registered by name (see the workflow)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities import fake_model
from activities.common import fail, node_activity
from activities.contracts import (
    LlmCallInput,
    LlmCallResult,
    SyncInput,
    ToolCallInput,
    ToolCallResult,
)
from infra.execution_store import apply_events, last_seq
from infra.logging import get_logger
from infra.models import Execution
from infra.settings import Settings
from infra.streams import read_events
from infra.tools.common import RetryableToolError
from infra.tools.http import call_http

log = get_logger("keel.activity")


class NodeActivities:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessions = sessions

    @activity.defn(name="keel.llm_call")
    async def llm_call(self, params: LlmCallInput) -> LlmCallResult:
        attempt = activity.info().attempt
        async with node_activity(params.execution_id, params.node_id):
            if params.agent.provider != "fake":
                raise await fail(f"provider {params.agent.provider!r} is not available",
                                 node_id=params.node_id, non_retryable=True)
            try:
                return await fake_model.complete(params, attempt)
            except fake_model.FakeModelError as exc:
                raise await fail(str(exc), node_id=params.node_id) from exc

    @activity.defn(name="keel.call_tool")
    async def call_tool(self, params: ToolCallInput) -> ToolCallResult:
        attempt = activity.info().attempt
        async with node_activity(params.execution_id, params.node_id):
            if params.tool.type != "http":
                raise await fail(f"tool type {params.tool.type!r} is not available",
                                 node_id=params.node_id, non_retryable=True)
            tool = params.tool
            try:
                outcome = await call_http(tool.name, tool.config, tool.input_schema,
                                          params.arguments, params.call_id,
                                          self.settings.secret_key)
            except RetryableToolError as exc:
                raise await fail(str(exc), node_id=params.node_id) from exc
            return ToolCallResult(ok=outcome.ok, output=outcome.output, error=outcome.error,
                                  latency_ms=outcome.latency_ms, attempt=attempt)

    @activity.defn(name="keel.sync_execution")
    async def sync_execution(self, params: SyncInput) -> int:
        """Fold the run's events so far into its database record; returns events added."""
        workflow_id = activity.info().workflow_id
        if workflow_id is None:
            raise RuntimeError("sync_execution runs only inside an execution workflow")
        for _ in range(3):
            async with self.sessions() as session:
                execution = await session.scalar(
                    select(Execution).where(Execution.id == params.execution_id)
                )
                if execution is None:
                    log.warning("execution row is gone; nothing to record",
                                execution_id=params.execution_id)
                    return 0
                after = await last_seq(session, execution.id)
                events = await read_events(activity.client(), workflow_id, after)
                added = await apply_events(session, execution, events)
                try:
                    await session.commit()
                    return added
                except IntegrityError:
                    # The API folded the same events concurrently; read again and continue.
                    await session.rollback()
        raise RuntimeError("could not record execution events after 3 tries")
