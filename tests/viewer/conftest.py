"""Browser tests of the run viewer: Chromium from the machine's packages (``.ci/run``
installs it; Playwright downloads nothing), driven by Playwright's async API against the
real platform of the engine tests (Temporal dev server, worker, uvicorn, database).

Playwright's async API, not pytest-playwright's sync fixtures: the platform is async and
lives on the session's event loop, where the sync API refuses to run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from infra.migrate import upgrade
from tests.support.engine import Platform, running_platform

CHROMIUM = Path(os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots for people to look at (gitignored); docs/ keeps one for the README.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# USD per million tokens, so the page has costs to show.
PRICES = {
    "models": {
        "keel-viewer-model": {"input": "2.50", "output": "10.00"},
        "fake-echo": {"input": "1.00", "output": "4.00"},
    }
}
# What the page is waited for, actions and assertions alike: a run page makes several API
# calls and opens a WebSocket, which on a busy 2-core CI machine can outlast Playwright's
# 5 s assertion default.
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)
# Where api/viewer/static/js/auth.js keeps the signed-in token.
CREDENTIAL_KEY = "keel.credential"
# Chromium logs every 4xx a page's fetch gets; the pages expect some (a refused credential).
EXPECTED_CONSOLE = re.compile(
    r"Failed to load resource: the server responded with a status of 4\d\d"
)


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """SQLite only: the pages see the database through the API, which the API tests cover
    on both backends; one backend halves the browser tests' time."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('viewer-db') / 'keel.db'}"
    await asyncio.to_thread(upgrade, url)
    yield url


@pytest.fixture
async def platform(
    clean_db: str, tmp_path: Path, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Platform]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    async with running_platform(
        clean_db, tmp_path, temporal_env, with_worker=True, pricing_file=prices
    ) as p:
        yield p


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
def allowed_console() -> list[str]:
    """Patterns of console errors a test expects (it appends to this list)."""
    return [EXPECTED_CONSOLE.pattern]


@asynccontextmanager
async def browser_page(
    browser: Browser, viewport: dict[str, Any], allowed_console: list[str]
) -> AsyncIterator[Page]:
    """A fresh browser context (no stored credential); the test fails on any uncaught
    error or unexpected console error of the page."""
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    yield page
    await context.close()
    unexpected = [
        e
        for e in errors
        if not e.startswith("console: ") or not any(re.search(p, e) for p in allowed_console)
    ]
    assert not unexpected, unexpected


async def store_credential(page: Page, base_url: str, token: str) -> None:
    """Put a token where the pages' auth.js keeps it: this tab's sessionStorage of Keel's
    origin, as signing in would (once, so signing out really forgets it)."""
    await page.goto(f"{base_url}/static/style.css")
    await page.evaluate(
        "([key, token]) => sessionStorage.setItem(key, token)", [CREDENTIAL_KEY, token]
    )


@pytest.fixture
async def signed_out_page(
    browser: Browser, request: pytest.FixtureRequest, allowed_console: list[str]
) -> AsyncIterator[Page]:
    """A page with no credential, for the tests of signing in."""
    async with browser_page(browser, getattr(request, "param", DESKTOP), allowed_console) as page:
        yield page


@pytest.fixture
async def page(
    browser: Browser, request: pytest.FixtureRequest, allowed_console: list[str], platform: Platform
) -> AsyncIterator[Page]:
    """A page signed in with the platform's owner key (parametrize it with a viewport)."""
    async with browser_page(browser, getattr(request, "param", DESKTOP), allowed_console) as page:
        token = platform.http.headers["Authorization"].removeprefix("Bearer ")
        await store_credential(page, platform.base_url, token)
        yield page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path
