"""One trace from ``POST /Execution/`` through the Temporal workflow to the LLM activity
and the model HTTP call, caught by an in-memory exporter (and printed: ``-s``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from infra.db import create_engine, session_factory
from infra.temporal import connect
from infra.tracing import stop_tracing, use_tracer_provider
from tests.support.engine import Platform, running_platform
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain
from tests.support.waiting import wait_for
from worker.main import build_worker
from workflows.contracts import ActivityName
from workflows.status import ExecutionStatus


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    yield exporter
    stop_tracing()


@pytest.fixture
async def traced_platform(
    spans: InMemorySpanExporter, clean_db: str, tmp_path: Path, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Platform]:
    """The API (made while tracing is on) and a worker on a client made the same way."""
    async with running_platform(clean_db, tmp_path, temporal_env, with_worker=False) as p:
        client = await connect(p.settings)
        engine = create_engine(p.settings.resolved_database_url)
        async with build_worker(client, p.settings, session_factory(engine)):
            yield p
        await engine.dispose()


def tree(spans: list[ReadableSpan], root: ReadableSpan) -> list[str]:
    """The trace under ``root``, one indented line per span, children by start time."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        assert span.context is not None
        lines.append("  " * depth + f"{span.name}  [{span.kind.name.lower()}]")
        for child in sorted(
            children.get(span.context.span_id, []), key=lambda s: s.start_time or 0
        ):
            walk(child, depth + 1)

    walk(root, 0)
    return lines


async def test_one_trace_from_the_request_to_the_model_call(
    traced_platform: Platform, spans: InMemorySpanExporter
) -> None:
    platform = traced_platform
    async with FakeOpenAI([Turn(content="traced answer")]) as llm:
        agent = await platform.agent(
            "assistant",
            provider="openai",
            model="gpt-4o-mini",
            base_url=llm.base_url,
            api_key="sk-test-1",
        )
        workflow = await platform.workflow(
            {
                "nodes": [{"id": "agent", "type": "agent", "agent_id": agent, "input": "hi"}],
                "edges": chain("agent"),
            }
        )
        spans.clear()
        execution = await platform.run(workflow)
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
        )
        assert final["status"] == ExecutionStatus.COMPLETED, final["error"]

        async def model_call_seen() -> ReadableSpan | None:
            return next(
                (s for s in spans.get_finished_spans() if s.name == "chat gpt-4o-mini"), None
            )

        model_call = await wait_for(model_call_seen, timeout=10, what="the model call's span")

    finished = list(spans.get_finished_spans())
    request = next(
        s for s in finished if s.name == "POST /api/v1/Execution/" and s.kind.name == "SERVER"
    )
    assert request.context is not None and model_call.context is not None
    trace_id = request.context.trace_id
    in_trace = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]
    root = next(s for s in in_trace if s.parent is None)
    lines = tree(in_trace, root)
    print("\nthe trace of one run:\n" + "\n".join(lines))  # noqa: T201  (the test's report)

    # One trace: the model call belongs to the request's.
    assert model_call.context.trace_id == trace_id
    names = [line.strip() for line in lines]
    depth = {name: len(line) - len(line.lstrip()) for name, line in zip(names, lines, strict=True)}
    llm_call = ActivityName.LLM_CALL.value
    # Each is in the trace, under the one before it (the workflow's own span is a
    # marker beside its activities: temporalio's TracingInterceptor makes it so).
    nested = [
        "POST /api/v1/Execution/  [server]",
        "StartWorkflow:ExecutionWorkflow  [client]",
        f"StartActivity:{llm_call}  [client]",
        f"RunActivity:{llm_call}  [server]",
        "chat gpt-4o-mini  [client]",
    ]
    for outer, inner in pairwise(nested):
        assert outer in depth and inner in depth, (outer, inner)
        assert depth[outer] < depth[inner], (outer, inner)
    assert (
        depth["RunWorkflow:ExecutionWorkflow  [server]"]
        == depth[f"StartActivity:{llm_call}  [client]"]
    )
    assert model_call.attributes is not None
    assert model_call.attributes["gen_ai.usage.output_tokens"] > 0
    assert model_call.attributes["server.port"] == llm.port
