from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from temporalio import workflow
from temporalio.api.taskqueue.v1 import PollerInfo
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.routes.health import POLLER_FRESH_S, live_workers
from tests.support.responses import data, error
from tests.support.settings import app_client, make_settings
from tests.support.waiting import wait_for


async def test_degraded_while_temporal_is_unreachable(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    body = error(response, 503)
    health = body["data"]
    assert health["status"] == "degraded"
    assert health["db"] == "ok"
    assert health["temporal"].startswith("unreachable at 127.0.0.1:1: ")
    assert "connect" in health["temporal"].lower()
    assert health["workers"] == 0
    assert body["msg"].startswith("degraded: temporal unreachable at 127.0.0.1:1")
    assert response.headers["x-request-id"]


async def test_degraded_while_the_database_is_down(tmp_path: Path) -> None:
    settings = make_settings("mysql+aiomysql://keel:wrong@127.0.0.1:1/none", tmp_path)
    async with app_client(settings, key="") as client:  # /health needs no credential
        health = error(await client.get("/health"), 503)["data"]
    assert health["status"] == "degraded"
    assert health["db"].startswith("error: ")
    assert "wrong" not in health["db"]  # no password in the report


@workflow.defn(name="HealthProbe")
class HealthProbe:
    @workflow.run
    async def run(self) -> None:
        return None


async def test_degraded_without_a_worker_then_ok(
    temporal_env: WorkflowEnvironment, clean_db: str, tmp_path: Path
) -> None:
    queue = f"health-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        clean_db,
        tmp_path,
        task_queue=queue,
        temporal_address=temporal_env.client.service_client.config.target_host,
    )
    async with app_client(settings) as client:
        # Runs would be accepted and wait: degraded until a worker polls.
        body = error(await client.get("/health"), 503)
        assert body["data"] == {
            "status": "degraded",
            "db": "ok",
            "temporal": "ok",
            "workers": 0,
            "runs_with_problems": 0,
        }
        assert body["msg"] == f"degraded: no worker polls the task queue '{queue}'"

        # A worker polling the task queue is counted, and the platform is healthy.
        async with Worker(
            temporal_env.client,
            task_queue=queue,
            workflows=[HealthProbe],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):

            async def one_worker() -> httpx.Response | None:
                response = await client.get("/health")
                return response if response.json()["data"]["workers"] == 1 else None

            response = await wait_for(
                one_worker, timeout=20, what="the worker to show up in /health"
            )
            assert data(response) == {
                "status": "ok",
                "db": "ok",
                "temporal": "ok",
                "workers": 1,
                "runs_with_problems": 0,
            }
            assert response.json()["msg"] == "success"


async def test_unknown_namespace_is_an_error_not_unreachable(
    temporal_env: WorkflowEnvironment, clean_db: str, tmp_path: Path
) -> None:
    settings = make_settings(
        clean_db,
        tmp_path,
        temporal_namespace="no-such-namespace",
        temporal_address=temporal_env.client.service_client.config.target_host,
    )
    async with app_client(settings, key="") as client:  # /health needs no credential
        health = error(await client.get("/health"), 503)["data"]
    assert health["db"] == "ok"
    assert health["temporal"].startswith("error from ")
    assert "no-such-namespace" in health["temporal"]


def test_a_worker_counts_while_its_polls_are_fresh() -> None:
    """Temporal lists a killed worker's last poll for minutes: it stops counting once its
    poll is older than a live worker's renewal allows."""
    now = 1_800_000_000.0

    def polled(identity: str, seconds_ago: float) -> PollerInfo:
        info = PollerInfo(identity=identity)
        info.last_access_time.FromMicroseconds(int((now - seconds_ago) * 1e6))
        return info

    pollers = [polled("live@a", 1), polled("live@a", 59), polled("idle@b", 70)]
    assert live_workers([*pollers, polled("killed@c", 120)], now) == 2
    assert live_workers([polled("killed@c", POLLER_FRESH_S + 1)], now) == 0
