"""Limits that protect the service: a request rate per principal, and a cap on the
executions of one workspace running at once."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from infra.db import create_engine
from infra.models import Execution
from infra.security.rate_limit import RateLimiter
from infra.security.roles import Role
from infra.settings import Settings
from tests.support.accounts import Accounts
from tests.support.responses import data
from tests.support.settings import app_client
from workflows.status import ExecutionStatus


def test_a_token_bucket_allows_bursts_then_the_rate() -> None:
    limiter = RateLimiter(per_s=2, burst=3)
    assert [limiter.take("k", now=0.0) for _ in range(3)] == [None] * 3
    assert limiter.take("k", now=0.0) == pytest.approx(0.5)
    assert limiter.take("other", now=0.0) is None  # each principal has its own bucket
    assert limiter.take("k", now=0.5) is None  # one more after 1/rate seconds
    assert RateLimiter(per_s=0, burst=1).take("k") is None  # 0: off


async def test_too_many_requests_are_429_with_retry_after(
    settings: Settings, accounts: Accounts
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 3})
    first = await accounts.api_key(Role.VIEWER, name="busy")
    second = await accounts.api_key(Role.VIEWER, name="calm")
    async with app_client(limited, first) as http:
        for _ in range(3):
            data(await http.get("/api/v1/Agent/"))
        refused = await http.get("/api/v1/Agent/")
        assert refused.status_code == 429
        assert refused.json()["code"] == 429 and "per second" in refused.json()["msg"]
        assert int(refused.headers["Retry-After"]) >= 1
        # Another principal is not held back by the first one's bucket.
        data(await http.get("/api/v1/Agent/", headers={"Authorization": f"Bearer {second}"}))


async def test_the_running_executions_cap_is_429_and_the_execution_stays_pending(
    settings: Settings, owner_key: str
) -> None:
    capped = settings.model_copy(update={"max_running_executions": 1})
    async with app_client(capped, owner_key) as http:
        agent = data(
            await http.post(
                "/api/v1/Agent/", json={"name": "echo", "provider": "fake", "model": "fake-echo"}
            ),
            201,
        )
        flow = data(
            await http.post(
                "/api/v1/Workflow/",
                json={
                    "name": "f",
                    "definition": {
                        "nodes": [
                            {"id": "a", "type": "agent", "agent_id": agent["id"], "input": "hi"}
                        ],
                        "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}],
                    },
                },
            ),
            201,
        )
        data(await http.post(f"/api/v1/Workflow/{flow['id']}/publish"))
        # One execution counts as running (as the worker would have it).
        running = data(
            await http.post("/api/v1/Execution/", json={"workflow_id": flow["id"], "start": False}),
            201,
        )
        await _set_status(capped, running["id"], "running")
        refused = await http.post(
            "/api/v1/Execution/", json={"workflow_id": flow["id"], "start": True}
        )
        assert refused.status_code == 429, refused.json()
        body = refused.json()
        assert "cap is 1" in body["msg"] and refused.headers["Retry-After"]
        listed = data(await http.get("/api/v1/Execution/"))
        pending = [e for e in listed["items"] if e["status"] == ExecutionStatus.PENDING]
        assert len(pending) == 1 and f"/Execution/{pending[0]['id']}/start" in body["msg"]


async def _set_status(settings: Settings, execution_id: int, status: str) -> None:
    engine = create_engine(settings.resolved_database_url)
    async with engine.begin() as conn:
        await conn.execute(
            update(Execution).where(Execution.id == execution_id).values(status=status)
        )
    await engine.dispose()
