"""The run page in a real browser, against a real platform."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page, expect

from tests.engine.conftest import Platform
from tests.fakes_llm import Turn
from tests.viewer.conftest import screenshot
from tests.viewer.gated_llm import GatedOpenAI

DRAFT = ("Keel runs each node as a Temporal activity so a crash of the worker loses nothing "
         "and the graph resumes where it stopped")


def node(page: Page, node_id: str) -> Any:
    return page.locator(f'svg.graph g.node[data-node="{node_id}"]')


async def review_flow(platform: Platform, llm: GatedOpenAI) -> int:
    writer = await platform.agent("writer", provider="openai", model="keel-viewer-model",
                                  base_url=llm.base_url, api_key="sk-test")
    echo = await platform.agent("checker")
    return await platform.workflow({
        "nodes": [
            {"id": "draft", "type": "agent", "agent_id": writer, "input": "Write about {{ input.topic }}"},
            {"id": "check_facts", "type": "agent", "agent_id": echo,
             "input": "Check {{ nodes.draft.output }}"},
            {"id": "check_style", "type": "agent", "agent_id": echo,
             "input": "Style of {{ nodes.draft.output }}"},
            {"id": "approve", "type": "human", "prompt": "Publish the draft about {{ input.topic }}?"},
            {"id": "publish", "type": "agent", "agent_id": echo, "input": "Publish it"},
        ],
        "edges": [
            {"from": "START", "to": "draft"},
            {"from": "draft", "to": "check_facts"}, {"from": "draft", "to": "check_style"},
            {"from": "check_facts", "to": "approve"}, {"from": "check_style", "to": "approve"},
            {"from": "approve", "to": "publish"}, {"from": "publish", "to": "END"},
        ],
    }, name="review")


async def test_a_live_run_streams_then_waits_for_approval_then_completes(
        platform: Platform, page: Page) -> None:
    async with GatedOpenAI(turns=[Turn(content=DRAFT, prompt_tokens=1200,
                                       completion_tokens=300)]) as llm:
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
            "Publish the draft about durable agents?")
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
        seqs = [int(s) for s in await page.locator("#events li").evaluate_all(
            "items => items.map(i => i.dataset.seq)")]
        assert seqs == list(range(1, len(seqs) + 1))
        final = await platform.get(execution["id"])
        assert final["status"] == "completed"
        await expect(page.locator("#run-cost")).to_have_text(f"${final['usage']['cost_usd']}")
