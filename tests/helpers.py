"""Small assertions and waits the tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.models import Base

T = TypeVar("T")


def data(response: httpx.Response, status: int = 200) -> Any:
    """The envelope's data, after checking status and envelope shape."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["code"] == (0 if status < 400 else status), body
    return body["data"]


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["code"] == status, body
    assert isinstance(body["msg"], str) and body["msg"], body
    return body


async def wait_for(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0,
                   interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def dump_database(engine: AsyncEngine) -> str:
    """Every row of every table, as text: to prove something is stored nowhere."""
    lines: list[str] = []
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)
