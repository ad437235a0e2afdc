"""The run page in a real browser, against a real platform."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, expect

from tests.support.engine import Platform
from tests.support.fake_llm import Turn
from tests.viewer.conftest import screenshot
from tests.viewer.gated_llm import GatedOpenAI
from workflows.status import ExecutionStatus

DRAFT = (
    "Keel runs each node as a Temporal activity so a crash of the worker loses nothing "
    "and the graph resumes where it stopped"
)


def node(page: Page, node_id: str) -> Any:
    return page.locator(f'svg.graph g.node[data-node="{node_id}"]')


async def review_flow(platform: Platform, llm: GatedOpenAI) -> int:
    writer = await platform.agent(
        "writer",
        provider="openai",
        model="keel-viewer-model",
        base_url=llm.base_url,
        api_key="sk-test",
    )
    echo = await platform.agent("checker")
    return await platform.workflow(
        {
            "nodes": [
                {
                    "id": "draft",
                    "type": "agent",
                    "agent_id": writer,
                    "input": "Write about {{ input.topic }}",
                },
                {
                    "id": "check_facts",
                    "type": "agent",
                    "agent_id": echo,
                    "input": "Check {{ nodes.draft.output }}",
                },
                {
                    "id": "check_style",
                    "type": "agent",
                    "agent_id": echo,
                    "input": "Style of {{ nodes.draft.output }}",
                },
                {
                    "id": "approve",
                    "type": "human",
                    "prompt": "Publish the draft about {{ input.topic }}?",
                },
                {"id": "publish", "type": "agent", "agent_id": echo, "input": "Publish it"},
            ],
            "edges": [
                {"from": "START", "to": "draft"},
                {"from": "draft", "to": "check_facts"},
                {"from": "draft", "to": "check_style"},
                {"from": "check_facts", "to": "approve"},
                {"from": "check_style", "to": "approve"},
                {"from": "approve", "to": "publish"},
                {"from": "publish", "to": "END"},
            ],
        },
        name="review",
    )


async def test_a_live_run_streams_then_waits_for_approval_then_completes(
    platform: Platform, page: Page
) -> None:
    async with GatedOpenAI(
        turns=[Turn(content=DRAFT, prompt_tokens=1200, completion_tokens=300)]
    ) as llm:
        workflow_id = await review_flow(platform, llm)
        execution = await platform.run(workflow_id, {"topic": "durable agents"})
        await page.goto(f"{platform.base_url}/runs/{execution['id']}")

        # The draft runs and streams; nothing after it has started.
        await expect(node(page, "draft")).to_have_class("node running")
        await expect(node(page, "draft")).to_contain_text("running")
        await expect(node(page, "check_facts")).to_contain_text("pending")
        await node(page, "draft").click()
        stream = page.locator("#stream-text")
        await expect(stream).to_contain_text("Keel runs each node")
        assert "resumes where it stopped" not in await stream.inner_text()
        await screenshot(page, "run-streaming")

        llm.gate.set()
        await expect(stream).to_have_text(DRAFT)
        await expect(node(page, "draft")).to_contain_text("completed")
        await expect(node(page, "check_facts")).to_contain_text("completed")
        await expect(node(page, "check_style")).to_contain_text("completed")
        await expect(node(page, "approve")).to_have_class("node waiting")
        await expect(node(page, "publish")).to_contain_text("pending")
        await expect(page.locator("#run-status")).to_contain_text("waiting")
        # Tokens and cost of the draft: 1,200 + 300 tokens at 2.50 and 10.00 per million.
        await expect(node(page, "draft")).to_contain_text("1,500 tok · $0.006")
        await screenshot(page, "run-waiting")

        # Approve with the keyboard: focus the node, open it, type, press the button.
        await node(page, "approve").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator(".approval .prompt")).to_have_text(
            "Publish the draft about durable agents?"
        )
        await page.locator("#approval-comment").fill("Looks right")
        await page.locator("#approve").focus()
        await page.keyboard.press("Enter")

        await expect(page.locator("#run-status")).to_contain_text("completed")
        await expect(node(page, "approve")).to_contain_text("completed")
        await expect(node(page, "publish")).to_contain_text("completed")
        await expect(page.locator("#human-answer")).to_contain_text("approve")
        await expect(page.locator("#human-answer")).to_contain_text("Looks right")
        await expect(page.locator("#cancel-run")).to_have_count(0)
        await expect(page.locator("#stream-state")).to_have_text("ended")
        await screenshot(page, "run-completed")

        # Every event shown once, in order, with nothing missing.
        seqs = [
            int(s)
            for s in await page.locator("#events li").evaluate_all(
                "items => items.map(i => i.dataset.seq)"
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))
        final = await platform.get(execution["id"])
        assert final["status"] == ExecutionStatus.COMPLETED
        shown = await page.locator("#run-cost").inner_text()
    assert Decimal(shown.removeprefix("$")) == Decimal(final["usage"]["cost_usd"]) > 0


async def chain(platform: Platform, *delays: float, name: str = "chain") -> int:
    """Fake-model agents one after the other, each taking its delay."""
    nodes, edges, previous = [], [], "START"
    for i, delay in enumerate(delays):
        agent = await platform.agent(f"{name}_agent_{i}", metadata={"fake": {"delay_s": delay}})
        nodes.append(
            {
                "id": f"step_{i + 1}",
                "type": "agent",
                "agent_id": agent,
                "input": f"step {i + 1} of {{{{ input.topic }}}}",
            }
        )
        edges.append({"from": previous, "to": f"step_{i + 1}"})
        previous = f"step_{i + 1}"
    edges.append({"from": previous, "to": "END"})
    return await platform.workflow({"nodes": nodes, "edges": edges}, name=name)


async def test_cancel_stops_the_run_and_the_page_shows_it_from_the_stream(
    platform: Platform, page: Page
) -> None:
    workflow_id = await chain(platform, 0, 60)
    execution = await platform.run(workflow_id, {"topic": "x"})
    await page.goto(f"{platform.base_url}/runs/{execution['id']}")
    await expect(node(page, "step_2")).to_contain_text("running")

    await page.locator("#cancel-run").click()
    await page.locator("#confirm-cancel").click()

    await expect(page.locator("#run-status")).to_contain_text("cancelled")
    await expect(node(page, "step_1")).to_contain_text("completed")
    await expect(node(page, "step_2")).to_have_class("node cancelled")
    await expect(page.locator("#cancel-run")).to_have_count(0)
    assert (await platform.get(execution["id"]))["status"] == ExecutionStatus.CANCELLED


async def test_a_dropped_stream_resumes_after_the_last_event_without_loss_or_repeats(
    platform: Platform, page: Page
) -> None:
    """The first WebSocket is cut after 3 events; the page reconnects with after=3 and a
    new ticket."""
    urls: list[str] = []

    async def cut_the_first(ws: Any) -> None:
        urls.append(ws.url)
        server = ws.connect_to_server()
        first = len(urls) == 1
        passed = 0

        def forward(message: str | bytes) -> None:
            nonlocal passed
            if first and passed >= 3:
                return
            ws.send(message)
            passed += 1
            if first and passed == 3:
                asyncio.get_running_loop().create_task(ws.close(code=4000, reason="dropped"))

        server.on_message(forward)

    await page.route_web_socket(re.compile(r"/api/v1/Execution/ws/"), cut_the_first)
    workflow_id = await chain(platform, 0, 0, 0)
    execution = await platform.run(workflow_id, {"topic": "x"})
    await page.goto(f"{platform.base_url}/runs/{execution['id']}")

    events, _ = await platform.watch(execution["id"])
    await expect(page.locator("#events li")).to_have_count(len(events))
    await expect(page.locator("#run-status")).to_contain_text("completed")
    # Each connection asks after the last event it applied, with a fresh single-use ticket
    # (a browser cannot set the Authorization header of a WebSocket).
    queries = [parse_qs(urlsplit(url).query) for url in urls]
    assert [q["after"] for q in queries] == [["0"], ["3"]], urls
    tickets = [q["ticket"][0] for q in queries]
    assert all(tickets) and tickets[0] != tickets[1]
    assert platform.auth["Authorization"].removeprefix("Bearer ") not in "".join(urls)
    seqs = [
        int(s)
        for s in await page.locator("#events li").evaluate_all(
            "items => items.map(i => i.dataset.seq)"
        )
    ]
    assert seqs == [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for step in ("step_1", "step_2", "step_3"):
        await expect(node(page, step)).to_contain_text("completed")


async def test_a_run_that_does_not_exist_gets_a_clear_message(
    platform: Platform, page: Page
) -> None:
    await page.goto(f"{platform.base_url}/runs/987654")
    await expect(page.get_by_role("alert")).to_contain_text("Run 987654 does not exist")
    await page.goto(f"{platform.base_url}/runs/not-a-number")
    await expect(page.get_by_role("alert")).to_contain_text("/runs/ followed by its number")
    await page.goto(f"{platform.base_url}/runs/{2**70}")
    await expect(page.get_by_role("alert")).to_contain_text("/runs/ followed by its number")


async def test_a_500_node_graph_draws_and_pans_and_zooms_and_lists(
    platform: Platform, page: Page
) -> None:
    agent = await platform.agent("wide")
    nodes, edges = [], []
    width, depth = 10, 50  # 10 parallel branches, 50 deep, joined at the end
    for column in range(width):
        previous = "START"
        for row in range(depth):
            node_id = f"n_{column}_{row}"
            nodes.append({"id": node_id, "type": "agent", "agent_id": agent, "input": "x"})
            edges.append({"from": previous, "to": node_id})
            previous = node_id
        edges.append({"from": previous, "to": "END"})
    workflow_id = await platform.workflow({"nodes": nodes, "edges": edges}, name="wide")
    execution = await platform.http.post(
        "/api/v1/Execution/", json={"workflow_id": workflow_id, "input": {}}
    )
    execution_id = execution.json()["data"]["id"]

    await page.goto(f"{platform.base_url}/runs/{execution_id}")
    await expect(page.locator("svg.graph g.node")).to_have_count(500)
    await expect(node(page, "n_9_49")).to_contain_text("pending")
    before = await page.locator("svg.graph g.viewport").get_attribute("transform")
    await page.get_by_role("button", name="Zoom in").click()
    await page.locator("svg.graph").focus()
    await page.keyboard.press("ArrowDown")
    assert await page.locator("svg.graph g.viewport").get_attribute("transform") != before
    await screenshot(page, "run-500-nodes")

    await page.get_by_role("button", name="List").click()
    await expect(page.locator("#node-list tbody tr")).to_have_count(500)
    await page.get_by_role("button", name="n_5_20").click()
    await expect(page.locator("#details h2")).to_have_text("n_5_20")
