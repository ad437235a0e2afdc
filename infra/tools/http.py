"""HTTP tools: one request built from the tool's config and the call's arguments."""

from __future__ import annotations

import time
from typing import Any

import httpx

from infra.tools.common import (
    MAX_RESULT_CHARS,
    RetryableToolError,
    ToolOutcome,
    argument_errors,
    reveal,
    truncate,
)


async def call_http(name: str, config: dict[str, Any], input_schema: dict[str, Any] | None,
                    arguments: dict[str, Any], call_id: str, secret_key: str) -> ToolOutcome:
    """Call the tool. Invalid arguments and 4xx answers are a failed outcome (the model
    can correct itself); timeouts, 429 and 5xx raise RetryableToolError."""
    problem = argument_errors(input_schema, arguments)
    if problem:
        return ToolOutcome(ok=False, error=f"invalid arguments for {name}: {problem}")
    method = str(config.get("method", "POST")).upper()
    url = config["url"]
    # The same call_id on every retry of one call, so the service can deduplicate.
    headers = {**reveal(config.get("headers"), secret_key), "Idempotency-Key": call_id}
    in_query = method in ("GET", "DELETE")
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=float(config.get("timeout_s", 30))) as http:
            response = await http.request(method, url, headers=headers,
                                          params=arguments if in_query else None,
                                          json=None if in_query else arguments)
    except httpx.TimeoutException as exc:
        raise RetryableToolError(f"{name}: timed out calling {url}") from exc
    except httpx.TransportError as exc:
        raise RetryableToolError(f"{name}: cannot reach {url}: {exc}") from exc
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableToolError(f"{name}: HTTP {response.status_code} from {url}")
    try:
        body: Any = response.json()
    except ValueError:
        body = truncate(response.text, MAX_RESULT_CHARS)
    output = {"status": response.status_code, "body": body}
    if response.status_code >= 400:
        return ToolOutcome(ok=False, output=output, latency_ms=latency_ms,
                           error=f"{name}: HTTP {response.status_code}: "
                                 f"{truncate(response.text, 500)}")
    return ToolOutcome(ok=True, output=output, latency_ms=latency_ms)
