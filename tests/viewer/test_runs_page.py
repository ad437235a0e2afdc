"""The runs list, the phone-width layout, and /docs and /redoc served without a CDN."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.support.engine import Platform
from tests.viewer.conftest import PHONE, screenshot
from tests.viewer.test_run_page import chain, node


async def test_the_list_shows_runs_newest_first_filters_them_and_opens_one(
    platform: Platform, page: Page
) -> None:
    quick = await chain(platform, 0, name="quick")
    slow = await chain(platform, 60, name="slow")
    first = await platform.run(quick, {"topic": "a"})
    await platform.wait_status(first["id"], "completed")
    second = await platform.run(slow, {"topic": "b"})
    third = await platform.run(quick, {"topic": "c"})
    await platform.wait_status(third["id"], "completed")

    await page.goto(f"{platform.base_url}/runs")
    rows = page.locator("table.runs tbody tr")
    await expect(rows).to_have_count(3)
    ids = await rows.evaluate_all("rows => rows.map(r => Number(r.dataset.execution))")
    assert ids == [third["id"], second["id"], first["id"]]
    await expect(rows.nth(1)).to_contain_text("running")
    await expect(rows.nth(1)).to_contain_text("slow v1")
    await expect(rows.nth(0)).to_contain_text("completed")
    await expect(page.locator("#page-info")).to_have_text("Page 1 of 1 · 3 runs")
    await screenshot(page, "runs-list")

    await page.locator("#filter-status").select_option("running")
    await expect(rows).to_have_count(1)
    assert "status=running" in page.url
    await page.locator("#filter-status").select_option("")
    await page.locator("#filter-workflow").select_option(label="quick")
    await expect(rows).to_have_count(2)

    await rows.nth(0).click()
    await expect(page).to_have_url(f"{platform.base_url}/runs/{third['id']}")
    await expect(node(page, "step_1")).to_contain_text("completed")


async def test_the_list_pages_through_many_runs(platform: Platform, page: Page) -> None:
    workflow_id = await chain(platform, 0, name="many")
    for _ in range(23):
        await platform.http.post("/api/v1/Execution/", json={"workflow_id": workflow_id})
    await page.goto(f"{platform.base_url}/runs")
    await expect(page.locator("table.runs tbody tr")).to_have_count(20)
    await page.get_by_role("button", name="Older →").click()
    await expect(page.locator("table.runs tbody tr")).to_have_count(3)
    await expect(page.locator("#page-info")).to_have_text("Page 2 of 2 · 23 runs")


@pytest.mark.parametrize("page", [PHONE], indirect=True)
async def test_a_run_reads_on_a_phone_without_sideways_scrolling(
    platform: Platform, page: Page
) -> None:
    workflow_id = await chain(platform, 0, 0, name="phone")
    execution = await platform.run(workflow_id, {"topic": "x"})
    await platform.wait_status(execution["id"], "completed")
    await page.goto(f"{platform.base_url}/runs/{execution['id']}")
    await expect(node(page, "step_2")).to_contain_text("completed")
    await node(page, "step_2").click()
    await expect(page.locator("#details h2")).to_have_text("step_2")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    await screenshot(page, "run-phone")
    await page.goto(f"{platform.base_url}/runs")
    await expect(page.locator("table.runs tbody tr")).to_have_count(1)
    assert (
        await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        <= 0
    )


@pytest.mark.parametrize(
    "path, ready",
    [
        ("/docs", ".swagger-ui .info .title"),
        ("/redoc", "h1"),
    ],
)
async def test_the_api_docs_load_from_keel_itself(
    platform: Platform, page: Page, path: str, ready: str, allowed_console: list[str]
) -> None:
    """Nothing is loaded from another origin: ReDoc's bundle would fetch its vendor's logo,
    which the page's Content-Security-Policy blocks in the browser (and Chromium logs that)."""
    requested: list[str] = []
    page.on("requestfinished", lambda request: requested.append(request.url))
    allowed_console.append(r"Loading the image 'https://cdn\.redoc\.ly/.* has been blocked")
    await page.goto(f"{platform.base_url}{path}")
    await expect(page.locator(ready).first).to_contain_text("Keel")
    elsewhere = [
        url for url in requested if not url.startswith((platform.base_url, "data:", "blob:"))
    ]
    assert not elsewhere, elsewhere
