"""The node activities: a model call and a tool call, declared in workflows.contracts."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.call_reads import CallReadsCache
from activities.common import fail, node_activity, node_attempt, token_stream
from activities.secrets import AgentRepointed, agent_api_key, tool_config
from infra.db import one_statement_writes
from infra.ledger import (
    Kind,
    first_exhausted,
    record_llm_call,
    record_tool_call,
    usage_key,
)
from infra.llm import AgentModel, LlmError, call_model, tool_schema
from infra.logging import get_logger
from infra.metrics import TOOL_CALLS, model_call_answered, model_call_failed
from infra.pricing import Pricing
from infra.secrets import SecretDecryptionError
from infra.security.scrub import keep_secret, scrub_text
from infra.settings import Settings
from infra.tools.common import RetryableToolError, ToolOutcome, config_secrets
from infra.tools.http import call_http
from infra.tools.mcp import call_mcp
from infra.tools.sealing import Repointed
from infra.tracing import tracer
from infra.usd import usd_text
from workflows.contracts import (
    ActivityName,
    LlmCallInput,
    LlmCallResult,
    ToolCallInput,
    ToolCallResult,
    Usage,
)
from workflows.errors import ErrorType

log = get_logger("keel.activity")


def _ledger_key(params: LlmCallInput | ToolCallInput, attempt: int, kind: Kind) -> str:
    """The usage ledger's key of this call's attempt, from its place in the run."""
    return usage_key(
        params.execution_id,
        params.node_id,
        attempt,
        params.call_index,
        kind=kind,
        visit=params.visit,
    )


class NodeActivities:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.pricing = Pricing.load(settings.pricing_file)  # a bad file stops the worker
        self.sessions = sessions
        self.ledger_writes = one_statement_writes(sessions)
        self.call_reads = CallReadsCache(sessions, settings.model_call_cache_s)

    @activity.defn(name=ActivityName.LLM_CALL.value)
    async def llm_call(self, params: LlmCallInput) -> LlmCallResult:
        """One model call of an agent node: checked against the budget first, streamed to
        watchers as llm.delta, and recorded in the usage ledger once it has answered."""
        spec = params.agent
        async with node_activity(params.execution_id, params.node_id, params.attempts_before):
            attempt = node_attempt()
            reads = await self.call_reads.get(params.workspace_id, spec.id, spec.base_url)
            if reads.budgets:  # a budget applies: sum what has been spent against it
                async with self.sessions() as session:
                    blocked = await first_exhausted(
                        session, params.workspace_id, [spec.id], reads.budgets
                    )
                if blocked:
                    raise await fail(
                        f"budget_exceeded: {blocked}",
                        node_id=params.node_id,
                        non_retryable=True,
                        error_type=ErrorType.BUDGET_EXCEEDED,
                    )
            try:
                api_key = agent_api_key(spec, reads.stored_key, self.settings.secret_key)
            except (SecretDecryptionError, AgentRepointed) as exc:
                raise await fail(
                    f"agent {spec.name!r}: {exc}", node_id=params.node_id, non_retryable=True
                ) from None
            keep_secret(api_key)
            return await self._llm_call(params, attempt, api_key)

    async def _llm_call(
        self, params: LlmCallInput, attempt: int, api_key: str | None
    ) -> LlmCallResult:
        spec = params.agent
        agent = AgentModel(
            name=spec.name,
            provider=spec.provider,
            model=spec.model,
            base_url=spec.base_url,
            api_key=api_key,
            temperature=spec.temperature,
            max_tokens=spec.max_tokens,
            metadata=spec.metadata,
        )
        tools = [tool_schema(t.name, t.description, t.input_schema) for t in params.tools]
        started = time.perf_counter()
        try:
            # The offline model answers at once; real ones stream unless told not to.
            streams = spec.provider != "fake" and spec.metadata.get("stream", True)
            async with token_stream(params, attempt, enabled=streams) as on_delta:
                reply = await call_model(
                    agent,
                    self.settings,
                    params.messages,
                    tools,
                    params.call_index,
                    attempt,
                    on_delta,
                )
        except LlmError as exc:
            model_call_failed(spec.provider, spec.model)
            raise await fail(
                str(exc), node_id=params.node_id, non_retryable=not exc.retryable
            ) from None
        async with self.ledger_writes() as connection:
            row = await record_llm_call(
                connection,
                key=_ledger_key(params, attempt, "llm"),
                workspace_id=params.workspace_id,
                execution_id=params.execution_id,
                workflow_id=params.workflow_id,
                agent_id=spec.id,
                node_id=params.node_id,
                provider=spec.provider,
                model=reply.model,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                cached_tokens=reply.cached_tokens,
                reasoning_tokens=reply.reasoning_tokens,
                latency_ms=(time.perf_counter() - started) * 1000,
                pricing=self.pricing,
            )
        model_call_answered(
            spec.provider,
            reply.model,
            time.perf_counter() - started,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cached_tokens=reply.cached_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            cost_usd=row.cost_usd if row else None,
        )
        return LlmCallResult(
            content=reply.content,
            tool_calls=reply.tool_calls,
            model=reply.model,
            attempt=attempt,
            usage=Usage(
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                cached_tokens=reply.cached_tokens,
                reasoning_tokens=reply.reasoning_tokens,
            ),
            cost_usd=usd_text(row.cost_usd if row else Decimal(0)),
            unpriced=bool(row and row.unpriced),
        )

    @activity.defn(name=ActivityName.CALL_TOOL.value)
    async def call_tool(self, params: ToolCallInput) -> ToolCallResult:
        """One tool call (HTTP or MCP); every attempt that reached the tool is recorded."""
        async with node_activity(params.execution_id, params.node_id, params.attempts_before):
            attempt = node_attempt()
            tool = params.tool
            if tool.type not in ("http", "mcp"):
                raise await fail(
                    f"tool type {tool.type!r} is not available",
                    node_id=params.node_id,
                    non_retryable=True,
                )
            try:
                config = await tool_config(self.sessions, tool, params.workspace_id)
            except Repointed as exc:
                raise await fail(
                    f"tool {tool.name!r}: {exc}", node_id=params.node_id, non_retryable=True
                ) from None
            keep_secret(*config_secrets(config, self.settings.secret_key))
            try:
                with tracer().start_as_current_span(
                    f"execute_tool {tool.name}",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": tool.name,
                        "keel.tool.type": tool.type,
                    },
                ):
                    outcome = await self._call(params, config)
            except RetryableToolError as exc:
                TOOL_CALLS.labels(tool.name, "retryable_error").inc()
                await self._record_tool(params, attempt, ok=False, latency_ms=None)
                raise await fail(str(exc), node_id=params.node_id) from None
            TOOL_CALLS.labels(tool.name, "ok" if outcome.ok else "error").inc()
            await self._record_tool(params, attempt, ok=outcome.ok, latency_ms=outcome.latency_ms)
            return ToolCallResult(
                ok=outcome.ok,
                output=outcome.output,
                error=scrub_text(outcome.error) if outcome.error else None,
                latency_ms=outcome.latency_ms,
                attempt=attempt,
            )

    async def _call(self, params: ToolCallInput, config: dict[str, Any]) -> ToolOutcome:
        tool = params.tool
        if tool.type == "mcp":
            return await call_mcp(
                tool.name,
                config,
                tool.input_schema,
                params.arguments,
                self.settings.secret_key,
                self.settings,
            )
        return await call_http(
            tool.name,
            config,
            tool.input_schema,
            params.arguments,
            params.call_id,
            self.settings.secret_key,
            self.settings,
        )

    async def _record_tool(
        self, params: ToolCallInput, attempt: int, *, ok: bool, latency_ms: float | None
    ) -> None:
        async with self.ledger_writes() as connection:
            await record_tool_call(
                connection,
                key=_ledger_key(params, attempt, "tool"),
                workspace_id=params.workspace_id,
                execution_id=params.execution_id,
                workflow_id=params.workflow_id,
                agent_id=params.agent_id,
                node_id=params.node_id,
                tool_name=params.tool.name,
                ok=ok,
                latency_ms=latency_ms,
            )
