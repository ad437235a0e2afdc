"""Settings for tests, and the real app over ASGI."""

from __future__ import annotations

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
            transport=httpx.ASGITransport(app=self.app), base_url="http://keel.test",
            headers={"Authorization": f"Bearer {self.key}"} if self.key else None,
        )
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)
