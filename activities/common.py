"""What every node activity does: heartbeat, bind log context, report retries."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError

from infra.logging import get_logger
from infra.security.scrub import scrub_text, scrubbing
from workflows.errors import ErrorType
from workflows.events import EVENTS_TOPIC, Event, EventType, NodeRetrying, event

log = get_logger("keel.activity")
HEARTBEAT_EVERY_S = 1.0
DELTA_BATCH = timedelta(milliseconds=200)
# Attempts that earlier schedules of this call used up before their worker was lost
# (the workflow schedules the call again then: workflows.execution).
_attempts_before: contextvars.ContextVar[int] = contextvars.ContextVar("attempts_before", default=0)


def node_attempt() -> int:
    """This attempt's number among all attempts of the call, lost schedules included:
    what events report and, with the call's place in the run, the usage ledger's key."""
    return _attempts_before.get() + activity.info().attempt


@asynccontextmanager
async def node_activity(
    execution_id: int, node_id: str, attempts_before: int = 0
) -> AsyncIterator[None]:
    """Heartbeat in the background so a cancel reaches the work within the heartbeat
    timeout (the cancel arrives as CancelledError wherever the work is awaiting, so an
    in-flight HTTP call is aborted, not waited out). An unexpected error leaves scrubbed."""
    _attempts_before.set(attempts_before)
    structlog.contextvars.bind_contextvars(
        execution_id=execution_id, node_id=node_id, attempt=node_attempt()
    )

    async def beat() -> None:
        # The first beat after a second, not at once: most node activities are done
        # by then, and each beat is a request to Temporal.
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            activity.heartbeat()

    beater = asyncio.create_task(beat())
    with scrubbing():  # the activity names its secrets with keep_secret
        try:
            yield
        except asyncio.CancelledError:
            log.info("node activity cancelled")
            raise
        except ApplicationError:
            raise
        except Exception as exc:
            # Anything unforeseen still passes the scrubber before Temporal records it
            # (and without its chain, whose texts would be recorded unscrubbed).
            log.exception("node activity failed unexpectedly")
            raise ApplicationError(
                scrub_text(f"{type(exc).__name__}: {exc}"), type=type(exc).__name__
            ) from None
        finally:
            beater.cancel()
            structlog.contextvars.unbind_contextvars("execution_id", "node_id", "attempt")


def will_retry(non_retryable: bool) -> bool:
    info = activity.info()
    if non_retryable:
        return False
    maximum = info.retry_policy.maximum_attempts if info.retry_policy else 0
    return maximum == 0 or info.attempt < maximum


async def publish(events: list[Event]) -> None:
    """Publish events into the run's stream (token deltas, tool calls, retries)."""
    client = WorkflowStreamClient.from_within_activity()
    topic = client.topic(EVENTS_TOPIC, type=Event)
    for item in events:
        topic.publish(item)
    await client.flush()


async def fail(
    message: str, *, node_id: str, non_retryable: bool = False, error_type: ErrorType | None = None
) -> ApplicationError:
    """The error to raise for a failed attempt, after telling watchers a retry is coming.
    The message passes the scrubber first: it goes into events, logs, the record and
    Temporal's history. Raise it ``from None``: a chained cause would carry the raw text
    into the history."""
    message = scrub_text(message)
    attempt = node_attempt()
    if will_retry(non_retryable):
        log.warning("node attempt failed; retrying", error=message)
        try:
            await publish(
                [
                    event(
                        EventType.NODE_RETRYING,
                        datetime.now(UTC).isoformat(),
                        node_id,
                        NodeRetrying(attempt=attempt + 1, error=message),
                    )
                ]
            )
        except Exception:
            log.exception("could not publish node.retrying")
    else:
        log.warning("node attempt failed for good", error=message)
    return ApplicationError(
        message,
        {"attempt": attempt},
        type=(
            error_type or (ErrorType.NON_RETRYABLE if non_retryable else ErrorType.NODE_ERROR)
        ).value,
        non_retryable=non_retryable,
    )


@asynccontextmanager
async def token_stream(
    params: Any, attempt: int, *, enabled: bool
) -> AsyncIterator[Callable[[str], None] | None]:
    """A callback that publishes text deltas as llm.delta events, batched every 200 ms
    by the stream client (one signal per batch, not per token)."""
    if not enabled:
        yield None
        return
    client = WorkflowStreamClient.from_within_activity(batch_interval=DELTA_BATCH)
    topic = client.topic(EVENTS_TOPIC, type=Event)

    def on_delta(text: str) -> None:
        topic.publish(
            event(
                EventType.LLM_DELTA,
                datetime.now(UTC).isoformat(),
                params.node_id,
                {"delta": text, "call_index": params.call_index, "attempt": attempt},
            )
        )

    async with client:
        yield on_delta
