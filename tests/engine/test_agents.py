"""Agents that think and act: the real ChatOpenAI path against an OpenAI-compatible
server on loopback, tool calls as their own activities, and the offline model."""

from __future__ import annotations

import json
from typing import Any

from tests.support.engine import Platform
from tests.support.fake_http import Behaviour, HttpToolService
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain, kinds
from workflows.events import EventType
from workflows.status import ExecutionStatus

API_KEY = "sk-test-secret-key-12345"


async def openai_agent(
    platform: Platform, llm: FakeOpenAI, name: str = "assistant", **fields: Any
) -> int:
    return await platform.agent(
        name,
        provider="openai",
        model="gpt-4o-mini",
        base_url=llm.base_url,
        api_key=API_KEY,
        system_prompt="You are terse.",
        **fields,
    )


async def one_node(platform: Platform, agent_id: int, **node: Any) -> int:
    return await platform.workflow(
        {
            "nodes": [
                {
                    "id": "agent",
                    "type": "agent",
                    "agent_id": agent_id,
                    "input": "Tell me about {{ input.topic }}",
                    **node,
                }
            ],
            "edges": chain("agent"),
        }
    )


async def test_openai_agent_streams_tokens_and_reports_usage(platform: Platform) -> None:
    async with FakeOpenAI(
        [Turn(content="The tide is high", prompt_tokens=12, completion_tokens=4)]
    ) as llm:
        agent = await openai_agent(platform, llm)
        execution = await platform.run(await one_node(platform, agent), {"topic": "tides"})
        events, code = await platform.watch(execution["id"])

    assert code == 1000
    deltas = [e["data"]["delta"] for e in events if e["type"] == EventType.LLM_DELTA]
    assert "".join(deltas) == "The tide is high" and len(deltas) == 4
    completed = next(e for e in events if e["type"] == EventType.NODE_COMPLETED)
    assert completed["data"]["output"] == "The tide is high"
    # Every delta arrives before the node completes, and seq stays contiguous.
    assert max(e["seq"] for e in events if e["type"] == EventType.LLM_DELTA) < completed["seq"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    request = llm.requests[0]
    assert request["authorization"] == f"Bearer {API_KEY}"  # decrypted inside the activity
    assert request["body"]["model"] == "gpt-4o-mini" and request["body"]["stream"] is True
    assert request["body"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about tides"},
    ]
    final = await platform.wait_status(execution["id"], "completed")
    assert final["output"] == "The tide is high"

    # The key is ciphertext everywhere Temporal keeps the run.
    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    assert API_KEY not in history.to_json()


async def test_agent_without_streaming(platform: Platform) -> None:
    async with FakeOpenAI([Turn(content="plain answer")]) as llm:
        agent = await openai_agent(platform, llm, metadata={"stream": False})
        execution = await platform.run(await one_node(platform, agent))
        events, _ = await platform.watch(execution["id"])
    assert not any(e["type"] == EventType.LLM_DELTA for e in events)
    assert not llm.requests[0]["body"].get("stream")
    assert (await platform.wait_status(execution["id"], "completed"))["output"] == "plain answer"


async def test_rate_limit_is_retried(platform: Platform) -> None:
    async with FakeOpenAI([Turn(status=429), Turn(content="second time lucky")]) as llm:
        agent = await openai_agent(platform, llm)
        execution = await platform.run(
            await one_node(platform, agent, retry={"max_attempts": 3, "initial_interval_s": 0.1})
        )
        final = await platform.wait_status(execution["id"], "completed", "failed")
        events, _ = await platform.watch(execution["id"])
    assert final["status"] == ExecutionStatus.COMPLETED and final["output"] == "second time lucky"
    assert len(llm.requests) == 2
    retrying = [e for e in events if e["type"] == EventType.NODE_RETRYING]
    assert len(retrying) == 1 and "429" in retrying[0]["data"]["error"]
    assert final["nodes"][0]["attempts"] == 2


async def test_bad_credentials_fail_at_once_with_a_clear_error(platform: Platform) -> None:
    async with FakeOpenAI([Turn(status=401)]) as llm:
        agent = await openai_agent(platform, llm)
        execution = await platform.run(
            await one_node(platform, agent, retry={"max_attempts": 5, "initial_interval_s": 0.1})
        )
        final = await platform.wait_status(execution["id"], "failed")
    assert len(llm.requests) == 1
    assert "refused the credentials (401)" in final["error"]
    assert "api_key" in final["error"]
    assert final["nodes"][0]["attempts"] == 1


async def test_agent_calls_a_tool_as_its_own_activity(platform: Platform) -> None:
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(tool_calls=[{"name": "lookup", "args": {"q": "tides"}}]),
                Turn(content="High tide at noon"),
            ]
        ) as llm,
    ):
        service.behaviours["lookup"] = Behaviour(fail_times=1, body={"high": "12:00"})
        tool = await platform.tool("lookup", service.url("lookup"))
        agent = await openai_agent(platform, llm, tool_ids=[tool])
        execution = await platform.run(
            await one_node(platform, agent, retry={"max_attempts": 3, "initial_interval_s": 0.1})
        )
        final = await platform.wait_status(execution["id"], "completed", "failed")
        events, _ = await platform.watch(execution["id"])

    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert final["output"] == "High tide at noon"
    # The tool failed once and was retried on its own: the model was asked only twice.
    assert len(llm.requests) == 2 and service.calls["lookup"] == 2
    keys = {r["idempotency_key"] for r in service.requests}
    assert len(keys) == 1  # the same key on the retry, so the service can deduplicate
    offered = llm.requests[0]["body"]["tools"][0]["function"]
    assert offered["name"] == "lookup"
    tool_message = llm.requests[1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"status": 200, "body": {"high": "12:00"}}
    called = next(e for e in events if e["type"] == EventType.TOOL_CALLED)
    assert called["data"]["tool"] == "lookup" and called["data"]["ok"] is True

    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    scheduled = "activity_task_scheduled_event_attributes"
    activity_ids = [
        getattr(e, scheduled).activity_id for e in history.events if e.HasField(scheduled)
    ]
    assert [a for a in activity_ids if a.startswith("agent/")] == [
        "agent/1/llm/0",
        "agent/1/tool/0/0",
        "agent/1/llm/1",
    ]


async def test_invalid_arguments_go_back_to_the_model(platform: Platform) -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(tool_calls=[{"name": "lookup", "args": {"q": 5}}]),
                Turn(tool_calls=[{"name": "lookup", "args": {"q": "five"}}]),
                Turn(content="fixed it"),
            ]
        ) as llm,
    ):
        tool = await platform.tool("lookup", service.url("lookup"))
        await platform.http.put(f"/api/v1/Tool/{tool}", json={"input_schema": schema})
        agent = await openai_agent(platform, llm, tool_ids=[tool])
        execution = await platform.run(await one_node(platform, agent))
        final = await platform.wait_status(execution["id"], "completed", "failed")
    assert final["status"] == ExecutionStatus.COMPLETED, final["error"]
    assert service.calls["lookup"] == 1  # the invalid call never reached the service
    error_message = llm.requests[1]["body"]["messages"][-1]["content"]
    assert "invalid arguments for lookup" in error_message and "q" in error_message
    assert service.requests[0]["body"] == {"q": "five"}


async def test_at_most_once_tool_is_never_retried(platform: Platform) -> None:
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(tool_calls=[{"name": "charge", "args": {"amount": 5}}]),
                Turn(content="could not charge"),
            ]
        ) as llm,
    ):
        service.behaviours["charge"] = Behaviour(fail_times=99)
        tool = await platform.tool("charge", service.url("charge"), delivery="at_most_once")
        agent = await openai_agent(platform, llm, tool_ids=[tool])
        execution = await platform.run(
            await one_node(platform, agent, retry={"max_attempts": 5, "initial_interval_s": 0.1})
        )
        final = await platform.wait_status(execution["id"], "completed", "failed")
    assert service.calls["charge"] == 1
    assert final["status"] == ExecutionStatus.COMPLETED and final["output"] == "could not charge"
    assert "HTTP 500" in llm.requests[1]["body"]["messages"][-1]["content"]


async def test_max_iterations_fails_the_node(platform: Platform) -> None:
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(tool_calls=[{"name": "lookup", "args": {"q": "again"}}]),
            ]
        ) as llm,
    ):
        tool = await platform.tool("lookup", service.url("lookup"))
        agent = await openai_agent(platform, llm, tool_ids=[tool], max_iterations=2)
        execution = await platform.run(await one_node(platform, agent))
        final = await platform.wait_status(execution["id"], "failed")
    assert len(llm.requests) == 2
    assert final["error"] == "agent 'assistant' did not answer within max_iterations=2 model calls"


async def test_offline_model_scripts_tool_calls(platform: Platform) -> None:
    async with HttpToolService() as service:
        service.behaviours["lookup"] = Behaviour(body={"answer": 42})
        tool = await platform.tool("lookup", service.url("lookup"))
        agent = await platform.agent(
            "offline",
            tool_ids=[tool],
            metadata={
                "fake": {
                    "script": [{"tool_calls": [{"name": "lookup", "args": {"q": "meaning"}}]}, {}]
                }
            },
        )
        execution = await platform.run(await one_node(platform, agent))
        events, _ = await platform.watch(execution["id"])
        final = await platform.wait_status(execution["id"], "completed")
    assert service.requests[0]["body"] == {"q": "meaning"}
    assert (EventType.TOOL_CALLED, "agent") in kinds(events)
    assert final["output"] == '[offline] {"body": {"answer": 42}, "status": 200}'
