"""Secrets stay secret: runs carry none (activities read them by id), and a key a model
server echoes back reaches no record, event, log or Temporal history."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db import create_engine
from infra.models import Tool
from tests.support.engine import Platform
from tests.support.fake_http import HttpToolService
from tests.support.fake_llm import FakeOpenAI, Turn
from tests.support.graphs import chain
from tests.support.responses import data
from workflows.events import EventType
from workflows.status import ExecutionStatus

# Shaped like no common credential: only scrubbing by the agent's own secret masks it.
AGENT_KEY = "zq-unusual-agent-key-4f9a2c7e1b8d"
TOOL_SECRET = "tool-secret-31415926535"


async def _everything_stored(database_url: str) -> str:
    """Every row of the run's tables, as text."""
    engine: AsyncEngine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = []
            for table in ("executions", "execution_events", "node_results", "usage_events"):
                try:
                    result = await conn.execute(text(f"SELECT * FROM {table}"))
                except Exception:  # a table this schema does not have
                    await conn.rollback()
                    continue
                rows += [repr(tuple(r)) for r in result]
            return "\n".join(rows)
    finally:
        await engine.dispose()


@pytest.fixture
def logs(platform: Platform) -> Iterator[io.StringIO]:
    """What the API and the (in-process) worker log, rendered as in production: the
    platform's lifespan configured logging, and this handler uses the same formatter."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter
    assert isinstance(formatter, structlog.stdlib.ProcessorFormatter)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)


async def test_an_echoed_api_key_appears_nowhere(platform: Platform, logs: io.StringIO) -> None:
    async with (
        HttpToolService() as service,
        FakeOpenAI(
            [
                Turn(status=429, echo_key=True),  # retried: node.retrying carries the error
                Turn(status=401, echo_key=True),  # for good: node.failed, execution.failed
            ]
        ) as llm,
    ):
        tool = await platform.tool(
            "lookup", service.url("lookup"), headers={"X-Api-Key": TOOL_SECRET}
        )
        agent = await platform.agent(
            "assistant",
            provider="openai",
            model="gpt-4o-mini",
            base_url=llm.base_url,
            api_key=AGENT_KEY,
        )
        workflow = await platform.workflow(
            {
                "nodes": [
                    {"id": "fetch", "type": "tool", "tool_id": tool},
                    {
                        "id": "agent",
                        "type": "agent",
                        "agent_id": agent,
                        "input": "hi",
                        "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                    },
                ],
                "edges": chain("fetch", "agent"),
            }
        )
        execution = await platform.run(workflow)
        final = await platform.wait_status(execution["id"], "failed")
        events, _ = await platform.watch(execution["id"])

    # The secrets were used, read by id inside the activities...
    assert [r["authorization"] for r in llm.requests] == [f"Bearer {AGENT_KEY}"] * 2
    assert service.requests[0]["headers"]["x-api-key"] == TOOL_SECRET
    # ...and the error still says what went wrong, with the key masked.
    assert "refused the credentials (401)" in final["error"]
    assert "Incorrect API key provided: ***" in final["error"]
    kinds = {e["type"] for e in events}
    assert {EventType.NODE_RETRYING, EventType.NODE_FAILED, EventType.EXECUTION_FAILED} <= kinds

    stored_events = data(await platform.http.get(f"/api/v1/Execution/{execution['id']}/events"))
    history = await platform.client.get_workflow_handle(
        execution["temporal"]["workflow_id"]
    ).fetch_history()
    history_json = history.to_json()
    logged = logs.getvalue()
    places = {
        "record": json.dumps(final),
        "events (WebSocket)": json.dumps(events),
        "events (REST)": json.dumps(stored_events),
        "database rows": await _everything_stored(platform.settings.resolved_database_url),
        "logs": logged,
        "Temporal history": history_json,
    }
    for place, content in places.items():
        for secret in (AGENT_KEY, TOOL_SECRET):
            assert secret not in content, f"{secret} found in {place}"
    assert "Incorrect API key provided: ***" in logged  # the logs were captured
    # Not even encrypted: the workflow input and activity inputs carry no secret at all.
    assert "enc:" not in history_json


async def test_a_run_never_sends_a_secret_to_a_destination_changed_since_it_started(
    platform: Platform, db: AsyncEngine
) -> None:
    """The run's snapshot points at the old URL; the stored tool now points elsewhere with
    new secrets: the activity refuses rather than mixing the two."""
    async with HttpToolService() as service:
        tool = await platform.tool(
            "lookup", service.url("lookup"), headers={"X-Api-Key": TOOL_SECRET}
        )
        workflow = await platform.workflow(
            {
                "nodes": [
                    {"id": "human", "type": "human", "prompt": "go?"},
                    {"id": "fetch", "type": "tool", "tool_id": tool},
                ],
                "edges": chain("human", "fetch"),
            }
        )
        execution = await platform.run(workflow)
        await platform.watch_until(execution["id"], EventType.HUMAN_WAITING)
        data(
            await platform.http.put(
                f"/api/v1/Tool/{tool}",
                json={
                    "config": {
                        "url": "http://127.0.0.1:9/elsewhere",
                        "method": "POST",
                        "headers": {"X-Api-Key": "another-secret-2718281828"},
                    }
                },
            )
        )
        data(
            await platform.http.post(
                f"/api/v1/Execution/{execution['id']}/signal",
                json={"node_id": "human", "action": "approve"},
            )
        )
        final = await platform.wait_status(execution["id"], "failed", "completed")
    assert final["status"] == ExecutionStatus.FAILED
    assert "points elsewhere" in final["error"]
    assert service.requests == []
    async with db.connect() as conn:
        stored = (await conn.execute(select(Tool.config).where(Tool.id == tool))).scalar_one()
    assert stored["url"].endswith("/elsewhere")
