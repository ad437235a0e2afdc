"""HTTP tools: one request built from the tool's config and the call's arguments.

Where a request may go and how its failures read are ``infra.tools.network``'s; masking
secrets and cutting long text are ``infra.tools.common``'s.
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from typing import Any

import httpx

from infra.secrets import SecretDecryptionError
from infra.settings import Settings, get_settings
from infra.tools.common import (
    RetryableToolError,
    ToolOutcome,
    argument_errors,
    cut_text,
    reveal,
    scrub,
    secret_values,
    truncate,
)
from infra.tools.network import (
    Failure,
    PinnedTransport,
    network_failure,
    resolve_destination,
)


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once: building them loads the CA bundle, about
    30 ms of CPU, which a new client per call would pay on every call. (A client per
    call stays: no cookies or connections are shared between tools.)"""
    return httpx.create_ssl_context()


async def read_limited(response: httpx.Response, limit: int) -> tuple[str, bool]:
    """The body as text, reading no more than about ``limit`` characters of it, and
    whether reading stopped before the end."""
    cap = limit * 4 + 4  # UTF-8: at most 4 bytes a character
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    text = b"".join(chunks)[:cap].decode(response.encoding or "utf-8", errors="replace")
    return text, size > cap


async def call_http(
    name: str,
    config: dict[str, Any],
    input_schema: dict[str, Any] | None,
    arguments: dict[str, Any],
    call_id: str,
    secret_key: str,
    settings: Settings | None = None,
) -> ToolOutcome:
    """Call the tool. Invalid arguments, 4xx answers, DNS and TLS failures and blocked
    destinations are a failed outcome (the model can correct itself, or a person must
    fix the config); timeouts, refused connections, 429 and 5xx raise RetryableToolError.
    Bodies longer than ``tool_max_response_chars`` are cut."""
    settings = settings or get_settings()
    problem = argument_errors(input_schema, arguments)
    if problem:
        return ToolOutcome(ok=False, error=f"invalid arguments for {name}: {problem}")
    method = str(config.get("method", "POST")).upper()
    url = str(config["url"])
    timeout_s = float(config.get("timeout_s", 30))
    limit = settings.tool_max_response_chars
    started = time.perf_counter()

    def failed(failure: Failure) -> ToolOutcome:
        message = f"{name}: {failure.message}"
        if failure.retryable:
            raise RetryableToolError(message)
        return ToolOutcome(
            ok=False, error=message, latency_ms=(time.perf_counter() - started) * 1000
        )

    destination = await resolve_destination(url, settings, timeout_s)
    if isinstance(destination, Failure):
        return failed(destination)
    try:
        revealed = reveal(config.get("headers"), secret_key)
    except SecretDecryptionError as exc:
        return failed(Failure("invalid", f"a secret header cannot be used: {exc}"))
    secrets = secret_values(config.get("headers"), revealed, all_secret=False)
    # The same call_id on every retry of one call, so the service can deduplicate.
    headers = {**revealed, "Idempotency-Key": call_id}
    in_query = method in ("GET", "DELETE")
    try:
        # To the address just checked (no second DNS answer), redirects not followed.
        transport = PinnedTransport(
            destination, httpx.AsyncHTTPTransport(verify=_tls()), httpx.ConnectError
        )
        # No proxy from the environment: it would resolve the name again itself.
        async with (
            httpx.AsyncClient(
                timeout=timeout_s, transport=transport, trust_env=False, follow_redirects=False
            ) as http,
            http.stream(
                method,
                url,
                headers=headers,
                params=arguments if in_query else None,
                json=None if in_query else arguments,
            ) as response,
        ):
            text, unread = await read_limited(response, limit)
    except Exception as exc:
        failure = network_failure(exc, url, timeout_s)
        if failure is None:
            raise
        return failed(failure)
    latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableToolError(f"{name}: HTTP {response.status_code} from {url}")
    body: Any
    if unread or len(text) > limit:
        body = cut_text(text, limit, unread, response.headers.get("content-length"))
    else:
        try:
            body = json.loads(text)
        except ValueError:
            body = text
    # A service that echoes a secret header does not get it into results or events.
    output = scrub({"status": response.status_code, "body": body}, secrets)
    if response.status_code >= 400:
        return ToolOutcome(
            ok=False,
            output=output,
            latency_ms=latency_ms,
            error=scrub(
                f"{name}: HTTP {response.status_code} from {url}: {truncate(text, 500)}", secrets
            ),
        )
    return ToolOutcome(ok=True, output=output, latency_ms=latency_ms)
