"""HTTP tools: one request built from the tool's config and the call's arguments."""

from __future__ import annotations

import time
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from activities.contracts import ToolCallInput, ToolCallResult
from infra.secrets import decrypt, is_encrypted

MAX_RESPONSE_CHARS = 64_000


class RetryableToolError(Exception):
    """The tool may succeed if called again (timeout, 429, 5xx, connection trouble)."""


def headers_of(config: dict[str, Any], secret_key: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (config.get("headers") or {}).items():
        raw = value.get("value", "") if isinstance(value, dict) else value
        out[name] = decrypt(raw, secret_key) if is_encrypted(raw) else str(raw)
    return out


def argument_errors(schema: dict[str, Any] | None, arguments: dict[str, Any]) -> str | None:
    if not schema:
        return None
    errors = sorted(Draft202012Validator(schema).iter_errors(arguments), key=lambda e: e.path)
    if not errors:
        return None
    return "; ".join(
        f"{'/'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in errors[:5]
    )


async def call_http(params: ToolCallInput, secret_key: str, attempt: int) -> ToolCallResult:
    tool = params.tool
    problem = argument_errors(tool.input_schema, params.arguments)
    if problem:
        return ToolCallResult(ok=False, error=f"invalid arguments for {tool.name}: {problem}",
                              attempt=attempt)
    config = tool.config
    method = str(config.get("method", "POST")).upper()
    headers = {**headers_of(config, secret_key), "Idempotency-Key": params.call_id}
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=float(config.get("timeout_s", 30))) as http:
            response = await http.request(
                method, config["url"], headers=headers,
                params=params.arguments if method in ("GET", "DELETE") else None,
                json=None if method in ("GET", "DELETE") else params.arguments,
            )
    except httpx.TimeoutException as exc:
        raise RetryableToolError(f"{tool.name}: timed out calling {config['url']}") from exc
    except httpx.TransportError as exc:
        raise RetryableToolError(f"{tool.name}: cannot reach {config['url']}: {exc}") from exc
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableToolError(f"{tool.name}: HTTP {response.status_code} from {config['url']}")
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:MAX_RESPONSE_CHARS]
    output = {"status": response.status_code, "body": body}
    if response.status_code >= 400:
        return ToolCallResult(ok=False, output=output, latency_ms=latency_ms, attempt=attempt,
                              error=f"{tool.name}: HTTP {response.status_code}: "
                                    f"{response.text[:500]}")
    return ToolCallResult(ok=True, output=output, latency_ms=latency_ms, attempt=attempt)
