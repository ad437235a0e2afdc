"""Keel's Prometheus metrics: every one is declared here, with its help text.

They live in ``prometheus_client``'s default registry. The API serves them at
``/metrics`` (``api.metrics``); a worker serves them on
``KEEL_WORKER_METRICS_PORT`` (``worker.metrics``), next to the Temporal SDK's
own metrics on ``KEEL_TEMPORAL_METRICS_PORT``. A process exposes the ones it
records (the others stay at zero), so totals are summed over processes.
docs/observability.md lists them with what each label means.

Labels are bounded: routes are templates (``/api/v1/Execution/{execution_id}``),
providers, models and tools are what operators configured, statuses are enums.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prometheus_client import Counter, Gauge, Histogram

# -- the API ------------------------------------------------------------------------------

# The count of each series is the request rate; its buckets, the latency.
HTTP_REQUEST_SECONDS = Histogram(
    "keel_http_request_duration_seconds",
    "HTTP requests served, by method, route template and status code, and how long "
    "each took (from the first byte in to the last byte out).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBSOCKET_WATCHERS = Gauge(
    "keel_websocket_watchers",
    "WebSocket watchers following a live execution on this API process now (a "
    "watcher of a finished run is sent its stored events at once and not counted).",
)
EVENT_FEEDS = Gauge(
    "keel_event_feeds",
    "Executions this API process follows in Temporal now (one stream subscription "
    "each, however many watchers).",
)
EVENTS_DELIVERED = Counter(
    "keel_events_delivered",
    "Execution events sent to WebSocket watchers (one per event per watcher).",
)
EXECUTIONS_STARTED = Counter(
    "keel_executions_started",
    "Executions started in Temporal.",
)
EXECUTIONS_FINISHED = Counter(
    "keel_executions_finished",
    "Executions whose record became finished, by final status (counted by the process "
    "that wrote it: the worker for runs that end on their own, the API for runs that "
    "closed in Temporal without telling, or were cancelled before they started).",
    ["status"],
)

# -- the worker ---------------------------------------------------------------------------

MODEL_CALLS = Counter(
    "keel_model_calls",
    "Model calls by provider, model and outcome (ok, or error: the provider refused, "
    "failed, timed out or could not be reached).",
    ["provider", "model", "outcome"],
)
MODEL_CALL_SECONDS = Histogram(
    "keel_model_call_duration_seconds",
    "How long answered model calls took, by provider and model.",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
MODEL_TOKENS = Counter(
    "keel_model_tokens",
    "Tokens of answered model calls by provider, model and kind (prompt, completion; "
    "cached is the part of prompt served from cache, reasoning the part of completion "
    "spent reasoning).",
    ["provider", "model", "kind"],
)
MODEL_COST_USD = Counter(
    "keel_model_cost_usd",
    "What answered model calls cost, in US dollars, by provider and model (as priced "
    "in the usage ledger; unpriced models add nothing).",
    ["provider", "model"],
)
TOOL_CALLS = Counter(
    "keel_tool_calls",
    "Tool call attempts by tool name and outcome: ok, error (the tool answered with an "
    "error, given back to the model or the run) or retryable_error (no answer, a "
    "timeout, a 5xx: Temporal tries again).",
    ["tool", "outcome"],
)
NODE_SECONDS = Histogram(
    "keel_node_duration_seconds",
    "How long completed workflow nodes took, from start to completion, retries "
    "included (observed by the process, worker or API, that records the completion).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)


def count_recorded(
    node_seconds: Iterable[float], status_before: str, status_after: str, finished: frozenset[str]
) -> None:
    """Metrics of what a writer just stored in a run's record: each event is stored by
    one writer only, so every node duration and every finished run counts once."""
    for seconds in node_seconds:
        NODE_SECONDS.observe(seconds)
    count_finished(status_before, status_after, finished)


def count_finished(status_before: str, status_after: str, finished: frozenset[str]) -> None:
    """Count an execution whose record just became finished (``finished``: the final
    statuses; the caller knows them, this module knows no domain vocabulary)."""
    if status_after != status_before and status_after in finished and status_before not in finished:
        EXECUTIONS_FINISHED.labels(status=status_after).inc()


def model_call_answered(
    provider: str,
    model: str,
    seconds: float,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
    cost_usd: Decimal | None,
) -> None:
    MODEL_CALLS.labels(provider, model, "ok").inc()
    MODEL_CALL_SECONDS.labels(provider, model).observe(seconds)
    for kind, tokens in (
        ("prompt", prompt_tokens),
        ("completion", completion_tokens),
        ("cached", cached_tokens),
        ("reasoning", reasoning_tokens),
    ):
        if tokens:
            MODEL_TOKENS.labels(provider, model, kind).inc(tokens)
    if cost_usd:
        MODEL_COST_USD.labels(provider, model).inc(float(cost_usd))


def model_call_failed(provider: str, model: str) -> None:
    MODEL_CALLS.labels(provider, model, "error").inc()
