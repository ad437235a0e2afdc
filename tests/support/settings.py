"""Settings for tests, and the real app over ASGI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx

from api.main import create_app
from infra.settings import Settings


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "temporal_address": "127.0.0.1:1",  # unreachable unless a test brings Temporal
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "log_level": "INFO",
        "max_request_bytes": 65_536,
        # Tools and fakes live on loopback; the stdio MCP servers run with this Python.
        "tools_allow_private": True,
        "mcp_stdio_allowed": [sys.executable],
        # Tests make requests as fast as they can; the limit has its own tests.
        "rate_limit_per_s": 0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class app_client:
    """``async with app_client(settings) as http``: the real app, its middleware and
    lifespan, served to an httpx client over ASGI that sends ``key`` (default: a new
    owner key of the default workspace; ``""``: no credential; a request may send
    another ``Authorization``)."""

    def __init__(self, settings: Settings, key: str | None = None) -> None:
        self.settings = settings
        self.key = key
        self.app = create_app(settings)
        self._lifespan = self.app.router.lifespan_context(self.app)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._lifespan.__aenter__()
        if self.key is None:
            from tests.support.accounts import Accounts

            made = Accounts(self.settings)
            self.key = await made.api_key(name="app client owner")
            await made.close()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://keel.test",
            headers={"Authorization": f"Bearer {self.key}"} if self.key else None,
        )
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``keel`` child process (api, worker, watch) with the test's
    settings: its Temporal, task queue, database, key, and the loopback allowances."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEEL_")},
        "KEEL_ENVIRONMENT": "test",
        "KEEL_DATA_DIR": str(settings.data_dir),
        "KEEL_DATABASE_URL": settings.resolved_database_url,
        "KEEL_TEMPORAL_ADDRESS": settings.temporal_address,
        "KEEL_TASK_QUEUE": settings.task_queue,
        "KEEL_WORKFLOW_ID_PREFIX": settings.workflow_id_prefix,
        "KEEL_SECRET_KEY": settings.secret_key,
        "KEEL_TOOLS_ALLOW_PRIVATE": str(settings.tools_allow_private).lower(),
        "KEEL_MCP_STDIO_ALLOWED": ",".join(settings.mcp_stdio_allowed),
        "KEEL_RATE_LIMIT_PER_S": str(settings.rate_limit_per_s),
        **({"KEEL_PRICING_FILE": str(settings.pricing_file)} if settings.pricing_file else {}),
        **extra,
    }
