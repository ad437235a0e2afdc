"""Metrics of real runs: the worker's (model calls, tokens, cost, tool calls, node
durations), the API's (executions started and finished, events delivered), and a
``keel worker`` process serving Keel's and the Temporal SDK's metrics endpoints."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import Platform
from tests.support.fake_http import Behaviour, HttpToolService
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain
from tests.support.net import free_port
from tests.support.waiting import wait_for
from workflows.status import ExecutionStatus

MODEL = {"provider": "openai", "model": "gpt-4o-mini"}


def sampler() -> Callable[[str, dict[str, str] | None], float]:
    """How much each sample grew since this was called (in this process's registry)."""
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            before[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def grew(name: str, labels: dict[str, str] | None = None) -> float:
        key = (name, tuple(sorted((labels or {}).items())))
        return (REGISTRY.get_sample_value(name, labels or {}) or 0.0) - before.get(key, 0.0)

    return grew


async def test_a_run_is_counted_by_model_tool_node_and_status(platform: Platform) -> None:
    grew = sampler()
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(
                    tool_calls=[{"name": "lookup", "args": {"q": "tides"}}],
                    prompt_tokens=20,
                    completion_tokens=7,
                ),
                Turn(content="High tide at noon", prompt_tokens=30, completion_tokens=4),
            ]
        ) as llm,
    ):
        service.behaviours["lookup"] = Behaviour(fail_times=1, body={"high": "12:00"})
        tool = await platform.tool("lookup", service.url("lookup"))
        agent = await platform.agent(
            "assistant", base_url=llm.base_url, api_key="sk-test-1", tool_ids=[tool], **MODEL
        )
        workflow = await platform.workflow(
            {
                "nodes": [
                    {
                        "id": "agent",
                        "type": "agent",
                        "agent_id": agent,
                        "input": "tides?",
                        "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                    }
                ],
                "edges": chain("agent"),
            }
        )
        execution = await platform.run(workflow)
        final = await platform.wait_status(
            execution["id"], ExecutionStatus.COMPLETED, ExecutionStatus.FAILED
        )
        events, _ = await platform.watch(execution["id"])
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]

    ok = {**MODEL, "outcome": "ok"}
    assert grew("keel_model_calls_total", ok) == 2
    assert grew("keel_model_call_duration_seconds_count", MODEL) == 2
    assert grew("keel_model_tokens_total", {**MODEL, "kind": "prompt"}) == 50
    assert grew("keel_model_tokens_total", {**MODEL, "kind": "completion"}) == 11
    assert grew("keel_model_cost_usd_total", MODEL) > 0  # gpt-4o-mini is in the price table
    assert grew("keel_tool_calls_total", {"tool": "lookup", "outcome": "retryable_error"}) == 1
    assert grew("keel_tool_calls_total", {"tool": "lookup", "outcome": "ok"}) == 1
    assert grew("keel_node_duration_seconds_count") == 1
    assert grew("keel_executions_started_total") == 1
    assert grew("keel_executions_finished_total", {"status": ExecutionStatus.COMPLETED.value}) == 1
    assert grew("keel_events_delivered_total") >= len(events)
    # Nobody watches any more: the gauges are back where they were.
    assert REGISTRY.get_sample_value("keel_websocket_watchers") == 0
    await wait_for(
        lambda: asyncio.sleep(0, REGISTRY.get_sample_value("keel_event_feeds") == 0),
        timeout=10,
        what="the feed to be dropped",
    )


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def test_a_worker_process_serves_keel_and_temporal_metrics(platform: Platform) -> None:
    settings = platform.settings
    keel_port, temporal_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "keel",
        "worker",
        env={
            **os.environ,
            "KEEL_ENVIRONMENT": "test",
            "KEEL_DATABASE_URL": settings.resolved_database_url,
            "KEEL_TEMPORAL_ADDRESS": settings.temporal_address,
            "KEEL_TASK_QUEUE": settings.task_queue,
            "KEEL_SECRET_KEY": settings.secret_key,
            "KEEL_WORKER_METRICS_PORT": str(keel_port),
            "KEEL_TEMPORAL_METRICS_PORT": str(temporal_port),
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def scrape(port: int, wanted: str) -> set[str] | None:
                try:
                    names = families((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
                except httpx.TransportError:
                    return None
                return names if any(name.startswith(wanted) for name in names) else None

            keel = await wait_for(
                lambda: scrape(keel_port, "keel_model_calls"),
                timeout=30,
                what="the worker's Keel metrics",
            )
            temporal = await wait_for(
                lambda: scrape(temporal_port, "temporal_"),
                timeout=30,
                what="the worker's Temporal SDK metrics",
            )
    finally:
        process.terminate()
        await process.wait()
    assert {
        "keel_model_calls",
        "keel_model_tokens",
        "keel_model_cost_usd",
        "keel_tool_calls",
        "keel_node_duration_seconds",
    } <= keel
    # The SDK's own: its worker polls the task queue once it runs.
    assert any(name.startswith("temporal_") for name in temporal), temporal
