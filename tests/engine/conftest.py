"""Fixtures for the engine tests: the whole platform (see tests/support/engine.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.engine import Platform, running_platform


def _overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings a test asks for with ``@pytest.mark.settings(name=value, ...)``."""
    marker = request.node.get_closest_marker("settings")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
async def platform(
    request: pytest.FixtureRequest, clean_db: str, tmp_path: Path, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Platform]:
    """The API and an in-process worker."""
    async with running_platform(
        clean_db, tmp_path, temporal_env, with_worker=True, **_overrides(request)
    ) as p:
        yield p


@pytest.fixture
async def platform_without_worker(
    request: pytest.FixtureRequest, clean_db: str, tmp_path: Path, temporal_env: WorkflowEnvironment
) -> AsyncIterator[Platform]:
    """The API only: the test runs its own worker processes (to kill them)."""
    async with running_platform(
        clean_db, tmp_path, temporal_env, with_worker=False, **_overrides(request)
    ) as p:
        yield p
