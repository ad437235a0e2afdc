"""Scale-out, proven (issue 13, point 3): one Temporal dev server, one database, two API
processes and two worker processes. 100 runs are started through both APIs, half of
them waiting for a human approval that is signalled through the other API; each run is
watched from the other API than its creator's. Mid-load one worker and then one API
are SIGKILLed; their clients move to the survivors.

Afterwards: every run completed, both workers did work, every watcher got every event
exactly once, the ledger holds one row per model call the fake model server answered,
and no execution row disagrees with Temporal.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from infra.db import create_engine
from infra.models import Execution, ExecutionEvent, UsageRecord
from tests.conftest import MYSQL_URL
from tests.support.accounts import bearer
from tests.support.fleet import (
    Client,
    KeelProcess,
    Watcher,
    api_process,
    streaming_llm,
    wait_until_polling,
    worker_process,
)
from tests.support.graphs import chain
from tests.support.responses import data, error
from tests.support.settings import make_settings
from tests.support.waiting import wait_for
from workflows.events import EventType
from workflows.status import FINISHED, ExecutionStatus

RUNS = 100
KILL_WORKER_AFTER_ANSWERS = 40  # model calls answered before a worker is killed
DEADLINE_S = 240
WATCH_TIMEOUT_S = 120  # for the watchers once the load is on; within DEADLINE_S


async def test_two_apis_and_two_workers_lose_nothing_when_one_of_each_is_killed(
    clean_db: str, tmp_path: Path, temporal_env: WorkflowEnvironment, owner_key: str
) -> None:
    if MYSQL_URL and clean_db.startswith("sqlite"):
        import pytest

        pytest.skip("with MariaDB at hand (CI), the scale-out runs on it only")
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        clean_db,
        tmp_path,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"keel-scale-{tag}",
        workflow_id_prefix=f"scale-{tag}",
    )
    headers = bearer(owner_key)
    workers = [worker_process(settings, tmp_path, f"worker-{i}") for i in range(2)]
    apis = [api_process(settings, tmp_path, f"api-{i}") for i in range(2)]
    engine = create_engine(settings.resolved_database_url)
    client = Client(apis, headers)
    llm = streaming_llm()
    try:
        async with llm, asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*(p.start() for p in [*workers, *apis]))
            await wait_until_polling(temporal_env.client, settings.task_queue, workers)
            await _run_the_load(
                settings.workflow_id_prefix,
                temporal_env,
                engine,
                llm,
                workers,
                apis,
                client,
                headers,
            )
    finally:
        await client.close()
        for process in [*apis, *workers]:
            await process.stop()
        await engine.dispose()


async def _ledger_llm_rows(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count()).select_from(UsageRecord).where(UsageRecord.kind == "llm")
            )
        )


async def _run_the_load(
    prefix: str,
    temporal_env: WorkflowEnvironment,
    engine: Any,
    llm: Any,
    workers: list[KeelProcess],
    apis: list[KeelProcess],
    client: Client,
    headers: dict[str, str],
) -> None:
    agent = data(
        await client.request(
            0,
            "POST",
            "/api/v1/Agent/",
            json={
                "name": "writer",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "base_url": llm.base_url,
                "api_key": "sk-scale-test",
            },
        ),
        201,
    )["id"]

    async def publish(definition: dict[str, Any], name: str) -> int:
        made = data(
            await client.request(
                0, "POST", "/api/v1/Workflow/", json={"name": name, "definition": definition}
            ),
            201,
        )
        data(await client.request(0, "POST", f"/api/v1/Workflow/{made['id']}/publish"))
        return int(made["id"])

    simple = await publish(
        {
            "nodes": [
                {"id": "answer", "type": "agent", "agent_id": agent, "input": "{{ input.topic }}"}
            ],
            "edges": chain("answer"),
        },
        "simple",
    )
    approved = await publish(
        {
            "nodes": [
                {"id": "draft", "type": "agent", "agent_id": agent, "input": "{{ input.topic }}"},
                {"id": "approve", "type": "human", "prompt": "ship it?"},
                {"id": "final", "type": "agent", "agent_id": agent, "input": "polish"},
            ],
            "edges": chain("draft", "approve", "final"),
        },
        "approved",
    )

    runs: list[dict[str, Any]] = []  # {"id", "creator", "human"}
    watchers: list[Watcher] = []
    following: list[asyncio.Task[None]] = []
    for i in range(RUNS):
        creator, human = i % 2, i % 4 >= 2
        execution = data(
            await client.request(
                creator,
                "POST",
                "/api/v1/Execution/",
                json={
                    "workflow_id": approved if human else simple,
                    "input": {"topic": f"run {i}"},
                    "start": True,
                },
            ),
            201,
        )
        runs.append({"id": execution["id"], "creator": creator, "human": human})
        other = 1 - creator
        watcher = Watcher(execution["id"], [apis[other], apis[creator]], headers)
        watchers.append(watcher)
        following.append(asyncio.create_task(watcher.follow(DEADLINE_S)))

    approver = asyncio.create_task(_approve_through_the_other_api(client, runs, watchers))

    # Kill a worker mid-load, without losing the ledger's count: hold the model's
    # answers, let every answered call be recorded, kill, answer again.
    await wait_for(
        lambda: _at_least(llm, KILL_WORKER_AFTER_ANSWERS),
        timeout=120,
        what=f"{KILL_WORKER_AFTER_ANSWERS} model calls",
    )
    llm.gate.clear()

    async def recorded_all() -> bool:
        return await _ledger_llm_rows(engine) == llm.answered

    await wait_for(recorded_all, timeout=30, what="every answered model call recorded")
    await workers[0].kill()
    llm.gate.set()

    # Then an API, while watchers follow from it and approvals are still to come.
    await wait_for(lambda: _approvals_pending(runs), timeout=60, what="approvals pending")
    await apis[0].kill()

    _, unfinished = await asyncio.wait(following, timeout=WATCH_TIMEOUT_S)
    if unfinished:
        raise AssertionError(
            await _why_unfinished(prefix, temporal_env, watchers, following, approver)
        )
    await approver

    # The record follows the stream a moment behind (the worker writes it after the
    # run's last event): wait until every row is finished.
    async def all_recorded() -> bool:
        async with engine.connect() as conn:
            open_runs = await conn.scalar(
                select(func.count())
                .select_from(Execution)
                .where(Execution.status.not_in([str(s) for s in FINISHED]))
            )
        return open_runs == 0

    await wait_for(all_recorded, timeout=60, what="every run's record to be finished")

    # Every run completed; the record agrees with Temporal.
    disagreeing, statuses = [], []
    async with engine.connect() as conn:
        rows = {row.id: row for row in (await conn.execute(select(Execution))).all()}
        stored = dict(
            (
                await conn.execute(
                    select(ExecutionEvent.execution_id, func.count()).group_by(
                        ExecutionEvent.execution_id
                    )
                )
            ).all()
        )
    identities: set[str] = set()
    for run in runs:
        row = rows[run["id"]]
        statuses.append(row.status)
        handle = temporal_env.client.get_workflow_handle(f"{prefix}-{run['id']}")
        described = await handle.describe()
        if (described.status == WorkflowExecutionStatus.COMPLETED) != (
            row.status == ExecutionStatus.COMPLETED
        ) or row.status not in FINISHED:
            disagreeing.append((run["id"], row.status, described.status))
        history = await handle.fetch_history()
        for event in history.events:
            if event.HasField("activity_task_started_event_attributes"):
                identities.add(event.activity_task_started_event_attributes.identity)
    assert statuses == [ExecutionStatus.COMPLETED] * RUNS, {
        s: statuses.count(s) for s in set(statuses)
    }
    assert disagreeing == []
    # Work was done by both workers (a worker's identity is its pid@host).
    assert len(identities) >= 2, identities

    # Every watcher got every event, once, in order.
    for watcher in watchers:
        seqs = [event["seq"] for event in watcher.events]
        assert seqs == list(range(1, stored[watcher.execution_id] + 1)), (
            watcher.execution_id,
            watcher.duplicates(),
            watcher.gaps(),
        )
    assert sum(w.reconnects for w in watchers) > 0  # the killed API's watchers moved

    # One ledger row per model call the model server answered.
    assert await _ledger_llm_rows(engine) == llm.answered


async def _at_least(llm: Any, answers: int) -> bool:
    return bool(llm.answered >= answers)


async def _approvals_pending(runs: list[dict[str, Any]]) -> bool:
    return any(run["human"] and not run.get("approved") for run in runs)


async def _approve_through_the_other_api(
    client: Client, runs: list[dict[str, Any]], watchers: list[Watcher]
) -> None:
    """Approve each run its watcher saw waiting, through the API that did not start it."""
    while await _approvals_pending(runs):
        for run, watcher in zip(runs, watchers, strict=True):
            if (
                not run["human"]
                or run.get("approved")
                or not any(e["type"] == EventType.HUMAN_WAITING for e in watcher.events)
            ):
                continue
            try:
                answered = await client.request(
                    1 - run["creator"],
                    "POST",
                    f"/api/v1/Execution/{run['id']}/signal",
                    json={"node_id": "approve", "action": "approve"},
                )
            except httpx.TransportError:  # its API died with the answer in flight
                run["sent_before"] = True
                continue
            if answered.status_code == 503:  # not taken in time: send it again, as asked
                run["sent_before"] = True
                continue
            if answered.status_code == 409 and run.get("sent_before"):
                error(answered, 409)  # an earlier attempt was taken after all
            else:
                data(answered)
            run["approved"] = True
        await asyncio.sleep(0.2)


async def _why_unfinished(
    prefix: str,
    temporal_env: WorkflowEnvironment,
    watchers: list[Watcher],
    following: list[asyncio.Task[None]],
    approver: asyncio.Task[None],
) -> str:
    """Which watchers are still following, where their runs stand, and whether the
    approver gave up: what a failure of this test needs to say."""
    stuck = [w for w, task in zip(watchers, following, strict=True) if not task.done()]
    lines = []
    for watcher in stuck[:5]:
        described = await temporal_env.client.get_workflow_handle(
            f"{prefix}-{watcher.execution_id}"
        ).describe()
        last = watcher.events[-1]["type"] if watcher.events else "nothing"
        lines.append(
            f"execution {watcher.execution_id}: last seq {watcher.last_seq} ({last}), "
            f"{watcher.reconnects} reconnects, workflow {described.status}"
        )
    if approver.done() and approver.exception():
        lines.append(f"the approver failed: {approver.exception()!r}")
    return f"{len(stuck)} watchers still following: " + "; ".join(lines)
