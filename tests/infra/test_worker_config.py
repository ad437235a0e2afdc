"""The worker takes as many workflow tasks at once as KEEL_WORKER_WORKFLOW_TASKS says."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from infra.db import create_engine, session_factory
from tests.support.settings import make_settings
from worker.main import build_worker


@pytest.mark.parametrize("slots", [None, 7])
async def test_the_worker_holds_the_configured_workflow_tasks(
    temporal_env: WorkflowEnvironment, tmp_path: Path, slots: int | None
) -> None:
    # A queue of its own: the SDK refuses a second worker on a queue while one is registered.
    overrides: dict[str, object] = {"task_queue": f"config-{uuid.uuid4().hex}"}
    if slots is not None:
        overrides["worker_workflow_tasks"] = slots
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}", tmp_path, **overrides)
    engine = create_engine(settings.resolved_database_url)
    try:
        worker = build_worker(temporal_env.client, settings, session_factory(engine))
        held = worker.config()["max_concurrent_workflow_tasks"]
    finally:
        await engine.dispose()
    assert held == (slots or 4)


def test_fewer_than_two_workflow_tasks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="worker_workflow_tasks"):
        make_settings("sqlite+aiosqlite://", tmp_path, worker_workflow_tasks=1)
