"""What one API request costs, layer by layer, in process (no sockets, no uvicorn).

    python -m bench.api_layers [--requests 400] [--clients 1]

Builds the real app (``api.main.create_app``) on a fresh SQLite file holding an
agent and a page of 20 finished executions (5 node runs and 5 usage rows each),
then calls the ASGI app directly with an owner's API key and reports CPU
microseconds per request (``time.process_time``): the full stack, the stack with
one middleware left out at a time, the route with the request-context middleware alone
(it closes the request's database session, so it cannot be left out), and the bare
endpoint of bench/bare_api.py on the same file. Sequential by default; ``--clients
50`` keeps 50 requests in flight, as `make bench`'s load does, so waiting for the
database pool and its threads counts too. In process, so the figures are the
server's own work per request, free of the load generator and of the machine's
other load (still noisy on a busy machine: take the median of runs).

Two costs of a served request are not in these figures: the apps log at WARNING, so
Keel's request log line (about 65 us over sockets) is not written, and they share this
process's garbage collector, whose settings ``keel api`` changes at start-up
(infra.heap). `make bench` measures both, over sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from api.main import create_app
from bench.bare_api import create_app as create_bare_app
from infra.accounts import OPERATOR, create_api_key
from infra.db import create_engine, session_factory
from infra.migrate import upgrade
from infra.models import (
    DEFAULT_WORKSPACE_ID,
    Agent,
    Execution,
    NodeRun,
    UsageRecord,
    Workflow,
)
from infra.security.roles import Role
from infra.settings import Settings
from workflows.status import ExecutionStatus, NodeStatus

SECRET = "bench-secret-key-that-is-long-enough-0123456789abcdef"


async def seed(settings: Settings) -> tuple[int, str]:
    """An agent, a workflow, 20 finished executions with node runs and usage; an owner key."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async with session_factory(engine)() as session:
            agent = Agent(
                workspace_id=DEFAULT_WORKSPACE_ID, name="a", provider="fake", model="fake-echo"
            )
            workflow = Workflow(
                workspace_id=DEFAULT_WORKSPACE_ID,
                name="w",
                version=1,
                definition={"nodes": [], "edges": []},
            )
            session.add_all([agent, workflow])
            await session.flush()
            now = datetime.now(UTC)
            for i in range(20):
                execution = Execution(
                    workspace_id=DEFAULT_WORKSPACE_ID,
                    workflow_id=workflow.id,
                    workflow_version=1,
                    status=ExecutionStatus.COMPLETED,
                    input={"bench": True},
                    output={"n4": f"out {i}"},
                    temporal_workflow_id=f"bench-{i}",
                    temporal_run_id=f"run-{i}",
                    created_at=now,
                    started_at=now,
                    finished_at=now + timedelta(seconds=1),
                )
                session.add(execution)
                await session.flush()
                for n in range(5):
                    session.add(
                        NodeRun(
                            execution_id=execution.id,
                            node_id=f"n{n}",
                            status=NodeStatus.COMPLETED,
                            attempts=1,
                            started_at=now,
                            finished_at=now,
                            output={"text": f"n{n} says hi"},
                        )
                    )
                    session.add(
                        UsageRecord(
                            workspace_id=DEFAULT_WORKSPACE_ID,
                            execution_id=execution.id,
                            workflow_id=workflow.id,
                            agent_id=agent.id,
                            node_id=f"n{n}",
                            kind="llm",
                            provider="fake",
                            model="fake-echo",
                            prompt_tokens=10,
                            completion_tokens=5,
                            total_tokens=15,
                            cost_usd=Decimal("0.0001"),
                            idempotency_key=f"bench-{execution.id}-{n}",
                        )
                    )
            _row, key = await create_api_key(
                session,
                settings.secret_key,
                workspace_id=DEFAULT_WORKSPACE_ID,
                name="bench",
                role=Role.OWNER,
                created_by=OPERATOR,
            )
            await session.commit()
            return agent.id, key
    finally:
        await engine.dispose()


def caller(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]
) -> Callable[[], Awaitable[int]]:
    path_only, _, query = path.partition("?")

    async def one() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path_only,
            "raw_path": path_only.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"keel.test"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        status = 0

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return one


async def cost_us(one: Callable[[], Awaitable[int]], requests: int, clients: int = 1) -> float:
    """Median over 5 rounds of CPU microseconds per request, ``clients`` requests in
    flight at a time (each a loop of requests, as a keep-alive client)."""
    for _ in range(20):  # warm caches (statement cache, pydantic, imports)
        if (status := await one()) != 200:
            raise RuntimeError(f"status {status}")
    per_round = requests // 5
    rounds = []
    for _ in range(5):
        left = per_round

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        started = time.process_time()
        await asyncio.gather(*[client() for _ in range(clients)])
        rounds.append((time.process_time() - started) / per_round * 1e6)
    return statistics.median(rounds)


def without(app: Any, middleware_name: str) -> None:
    app.user_middleware = [m for m in app.user_middleware if m.cls.__name__ != middleware_name]
    app.middleware_stack = None


async def measure(requests: int, clients: int) -> list[tuple[str, str, float]]:
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="keel-layers-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'keel.db'}"
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            _env_file=None,
            environment="test",
            data_dir=Path(tmp),  # type: ignore[call-arg]
            database_url=url,
            temporal_address="127.0.0.1:1",
            secret_key=SECRET,
            log_level="WARNING",
            rate_limit_per_s=0,  # as bench/platform.py: the loop is one principal, fast
        )
        agent_id, key = await seed(settings)
        auth = [(b"authorization", f"Bearer {key}".encode())]
        paths = {
            "GET /Agent/{id}": (f"/api/v1/Agent/{agent_id}", f"/agent/{agent_id}"),
            "GET /Execution/ (20)": ("/api/v1/Execution/?page=1&page_size=20", "/executions"),
        }
        variants: list[tuple[str, list[str], list[tuple[bytes, bytes]]]] = [
            ("full stack, with the API key", [], auth),
            ("no body-limit middleware", ["BodyLimitMiddleware"], auth),
            ("no collection-path middleware", ["CollectionPathMiddleware"], auth),
            ("no request-metrics middleware", ["RequestMetricsMiddleware"], auth),
            # The request-context middleware stays: it closes the request's session.
            (
                "the request-context middleware alone",
                ["BodyLimitMiddleware", "CollectionPathMiddleware", "RequestMetricsMiddleware"],
                auth,
            ),
        ]
        for label, dropped, headers in variants:
            app = create_app(settings)
            for name in dropped:
                without(app, name)
            async with app.router.lifespan_context(app):
                for what, (keel_path, _bare) in paths.items():
                    one = caller(app, keel_path, headers)
                    rows.append((what, label, await cost_us(one, requests, clients)))
        bare = create_bare_app(url)
        async with bare.router.lifespan_context(bare):
            for what, (_keel, bare_path) in paths.items():
                rows.append(
                    (
                        what,
                        "bare FastAPI (bench/bare_api.py)",
                        await cost_us(caller(bare, bare_path, []), requests, clients),
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--clients", type=int, default=1, help="requests in flight at a time (default 1)"
    )
    args = parser.parse_args()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows = asyncio.run(measure(args.requests, args.clients))
    print(
        f"load average {load}; CPU us per request, median of 5 rounds of "
        f"{args.requests // 5}, {args.clients} in flight at a time"
    )
    print("| endpoint | stack | CPU us/request |")
    print("| --- | --- | --- |")
    for what, label, us in rows:
        print(f"| {what} | {label} | {us:.0f} |")


if __name__ == "__main__":
    main()
