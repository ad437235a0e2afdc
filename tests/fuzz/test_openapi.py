"""schemathesis against /openapi.json, with an owner's credential: whatever it sends, no
response is a 5xx and every response matches the schema. Bounded (a few hundred cases
in all) so the suite stays fast; a real API over HTTP, a real Temporal dev server (so
starting an execution is not a 503), no worker (runs stay pending)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as run_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from tests.support.net import free_port
from tests.support.settings import make_settings
from tests.support.waiting import wait_for

TOTAL_CASES = 300
# /health answers 503 by design while no worker polls (this test runs none).
PROBES = {"/health"}


def _fuzz(base_url: str, key: str) -> int:
    """Every operation gets its share of the cases; returns how many were sent."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.path not in PROBES
    ]
    per_operation = max(3, TOTAL_CASES // len(operations))
    auth = {"Authorization": f"Bearer {key}"}
    sent = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @run_settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(
                base_url=base_url,
                headers=auth,
                timeout=30,
                checks=[not_a_server_error, response_schema_conformance],
            )

        check()
    return sent


async def test_no_request_gives_a_5xx_or_breaks_the_schema(
    clean_db: str, tmp_path: Path, owner_key: str, temporal_env: WorkflowEnvironment
) -> None:
    port = free_port()
    settings = make_settings(
        clean_db,
        tmp_path,
        api_port=port,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"keel-fuzz-{uuid.uuid4().hex[:8]}",
        log_level="WARNING",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
        )
    )
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    try:
        await wait_for(started, timeout=20, what="API server start")
        sent = await asyncio.to_thread(_fuzz, f"http://127.0.0.1:{port}", owner_key)
        assert sent >= TOTAL_CASES // 2
    finally:
        server.should_exit = True
        await serving
