"""`keel worker`: runs execution workflows and their activities on the task queue."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.nodes import NodeActivities
from activities.record import RecordActivities
from infra.db import create_engine, session_factory
from infra.heap import settle_startup_heap
from infra.logging import configure_logging, get_logger
from infra.settings import Settings
from infra.temporal import SearchAttributesMissing, connect, ensure_search_attributes
from infra.tracing import configure_tracing
from worker.metrics import serve_metrics
from workflows.execution import ExecutionWorkflow

log = get_logger("keel.worker")

# The only modules the checking sandbox passes through: LangGraph and its helpers
# (langsmith is imported lazily by langchain_core at invoke time), and the tracing
# interceptor's workflow side (when tracing is on). None of ours, so every call our
# workflow modules make is checked.
THIRD_PARTY_PASSTHROUGH = ("langgraph", "langchain_core", "langsmith", "opentelemetry")


def workflow_runner() -> WorkflowRunner:
    """How ``keel worker`` runs workflow code: outside Temporal's sandbox.

    The sandbox re-imports the workflow's module for every run and wraps every
    activation, and every payload of every workflow task, in its import machinery:
    without it the worker's CPU per run fell by a third (docs/benchmarks.md, tenth
    pass). What it buys, a workflow task that fails when workflow code calls the
    clock, randomness or I/O, the test-suite buys instead, over more of our code: the
    workflow tests and the replay test run ExecutionWorkflow in ``checking_runner``."""
    return UnsandboxedWorkflowRunner()


def checking_runner() -> SandboxedWorkflowRunner:
    """Temporal's sandbox with none of our modules passed through: a call into the
    clock, randomness or I/O from any of them fails the workflow task. (A module passed
    through is imported outside the sandbox, and its calls go unchecked.)"""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*THIRD_PARTY_PASSTHROUGH)
    )


def build_worker(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    **options: object,
) -> Worker:
    """The worker of execution workflows, with the node activities and the record's."""
    nodes = NodeActivities(settings, sessions)
    record = RecordActivities(sessions)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ExecutionWorkflow],
        activities=[nodes.llm_call, nodes.call_tool, record.sync_execution],
        workflow_runner=workflow_runner(),
        max_concurrent_workflow_tasks=settings.worker_workflow_tasks,
        # Drain: on shutdown, no new tasks; in-flight activities get this long to finish,
        # then are cancelled and Temporal retries them on another worker.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
        **options,  # type: ignore[arg-type]
    )


async def run_worker(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM, then drain; the process's exit code."""
    configure_logging(settings.log_level, settings.log_format)
    serve_metrics(settings)
    configure_tracing("keel-worker")  # before connecting: the client gets the interceptor
    client = await connect(settings)
    try:
        await ensure_search_attributes(client, settings)
    except SearchAttributesMissing as exc:
        log.error("cannot start the worker", reason=str(exc))
        return 2
    engine = create_engine(settings.resolved_database_url)
    worker = build_worker(client, settings, session_factory(engine))
    settle_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", task_queue=settings.task_queue, temporal=settings.temporal_address)
    try:
        async with worker:
            await stop.wait()
            log.info(
                "worker draining: no new tasks; in-flight activities may finish",
                grace_s=settings.worker_shutdown_grace_s,
            )
    finally:
        await engine.dispose()
        log.info("worker stopped")
    return 0
