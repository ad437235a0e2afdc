"""Sign-in, roles and rerun in the browser: the pages keep a credential in the tab's
sessionStorage, send it as a bearer token, and show only the actions the role allows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from infra.security.roles import Role
from tests.support.accounts import PASSWORD, Accounts
from tests.support.engine import Platform
from tests.support.fake_http import Behaviour, HttpToolService
from tests.viewer.conftest import screenshot
from tests.viewer.test_run_page import node


@pytest.fixture
async def people(platform: Platform) -> AsyncIterator[Accounts]:
    """An owner with a password (watcher@example.com), and the means to make more keys."""
    made = Accounts(platform.settings)
    await made.user("watcher@example.com", password=PASSWORD)
    yield made
    await made.close()


async def sign_in_with_key(page: Page, key: str) -> None:
    await page.get_by_label("API key", exact=True).check()
    await page.locator("#api-key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_with_email_and_password_then_sign_out(
    platform: Platform, people: Accounts, signed_out_page: Page
) -> None:
    page = signed_out_page
    await page.goto(f"{platform.base_url}/runs")
    await page.locator("#email").fill("watcher@example.com")
    await page.locator("#password").fill("a wrong password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).not_to_be_empty()

    await page.locator("#password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await expect(page.locator("#user")).to_contain_text("owner")
    assert await page.evaluate("Object.keys(sessionStorage)") == ["keel.credential"]
    assert await page.evaluate("document.cookie") == ""

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to Keel")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_wrong_key_is_refused_clearly(
    platform: Platform, people: Accounts, signed_out_page: Page
) -> None:
    page = signed_out_page
    await page.goto(f"{platform.base_url}/runs")
    await sign_in_with_key(page, "keel_not_a_real_key")
    await expect(page.locator("#signin-error")).to_contain_text("refused")
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_viewer_sees_the_run_but_no_actions(
    platform: Platform, people: Accounts, signed_out_page: Page
) -> None:
    page = signed_out_page
    viewer_key = await people.api_key(Role.VIEWER, name="viewer")
    echo = await platform.agent("echo")
    workflow_id = await platform.workflow(
        {
            "nodes": [
                {"id": "draft", "type": "agent", "agent_id": echo, "input": "x"},
                {"id": "approve", "type": "human", "prompt": "Ship it?"},
            ],
            "edges": [
                {"from": "START", "to": "draft"},
                {"from": "draft", "to": "approve"},
                {"from": "approve", "to": "END"},
            ],
        },
        name="gated",
    )
    execution = await platform.run(workflow_id)
    await page.goto(f"{platform.base_url}/runs/{execution['id']}")
    await sign_in_with_key(page, viewer_key)
    await expect(node(page, "approve")).to_contain_text("waiting")
    await node(page, "approve").click()
    await expect(page.locator(".approval")).to_contain_text("An editor of this workspace")
    await expect(page.locator("#approve")).to_have_count(0)
    await expect(page.locator("#reject")).to_have_count(0)
    await expect(page.locator("#cancel-run")).to_have_count(0)
    await expect(page.locator("#user")).to_contain_text("viewer")

    # Finished (cancelled by an editor): still no action, not even a rerun.
    cancelled = await platform.http.post(f"/api/v1/Execution/{execution['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    await expect(page.locator("#run-status")).to_contain_text("cancelled")
    await node(page, "draft").click()
    await expect(page.locator("#details h2")).to_have_text("draft")
    await expect(page.locator("#rerun")).to_have_count(0)


async def test_rerun_a_failed_run_from_its_failed_node_reuses_the_nodes_before_it(
    platform: Platform, page: Page
) -> None:
    async with HttpToolService(behaviours={"check": Behaviour(fail_times=1)}) as service:
        first = await platform.agent("first")
        tool = await platform.tool("check", service.url("check"))
        workflow_id = await platform.workflow(
            {
                "nodes": [
                    {"id": "gather", "type": "agent", "agent_id": first, "input": "go"},
                    {
                        "id": "check",
                        "type": "tool",
                        "tool_id": tool,
                        "arguments": {"text": "{{ nodes.gather.output }}"},
                        "retry": {"max_attempts": 1},
                    },
                ],
                "edges": [
                    {"from": "START", "to": "gather"},
                    {"from": "gather", "to": "check"},
                    {"from": "check", "to": "END"},
                ],
            },
            name="flaky",
        )
        failed = await platform.run(workflow_id, {"topic": "x"})
        await platform.wait_status(failed["id"], "failed")

        await page.goto(f"{platform.base_url}/runs/{failed['id']}")
        await expect(node(page, "check")).to_contain_text("failed")
        await node(page, "check").click()
        await expect(page.locator("#detail-error")).not_to_be_empty()
        await page.get_by_role("button", name="Rerun from check").click()

        await expect(page).not_to_have_url(f"{platform.base_url}/runs/{failed['id']}")
        await expect(page.locator("#run-status")).to_contain_text("completed")
        await expect(node(page, "gather")).to_have_class("node reused")
        await expect(node(page, "gather")).to_contain_text("reused")
        await expect(node(page, "gather")).to_contain_text(f"from run #{failed['id']}")
        await expect(node(page, "check")).to_contain_text("completed")
        await expect(page.locator(".subtitle")).to_contain_text(f"rerun of #{failed['id']}")
        await screenshot(page, "run-rerun")
