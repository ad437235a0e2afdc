"""HTTP tools: one request built from the tool's config and the call's arguments.

Also what every client that opens a network connection for a tool shares (the MCP
client uses it for its HTTP transports):

- ``check_destination``: resolve the host first and refuse link-local and cloud-metadata
  addresses (``169.254.0.0/16``, ``fe80::/10``, ``169.254.169.254``, ``fd00:ec2::254``,
  ``metadata.google.internal``) unless ``KEEL_TOOL_ALLOW_LINK_LOCAL`` is set. Loopback and
  private networks stay allowed: local tools and the tests live there.
- ``network_failure``: turn an exception from a connection attempt into a reason a person
  can act on (DNS, refused, timeout, TLS, HTTP status) and whether trying again may help.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2

from infra.secrets import SecretDecryptionError
from infra.settings import Settings, get_settings
from infra.tools.common import (
    RetryableToolError,
    ToolOutcome,
    argument_errors,
    reveal,
    truncate,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints: by name (checked before any DNS query) and by address.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
})
ALLOW_SETTING = "KEEL_TOOL_ALLOW_LINK_LOCAL"


@dataclass
class Failure:
    """Why a connection attempt failed. ``kind`` is one of dns, refused, timeout, tls,
    http_status, connection, protocol, blocked, invalid, not_allowed, process_exited,
    spawn_failed."""

    kind: str
    message: str
    retryable: bool = False


MASK = "***"


def secret_values(values: dict[str, Any] | None, revealed: dict[str, str], *,
                  all_secret: bool) -> list[str]:
    """The plaintext of the secret entries of a headers/env map (to mask them)."""
    out = []
    for key, raw in (values or {}).items():
        secret = all_secret or (isinstance(raw, dict) and raw.get("secret", True))
        plain = revealed.get(key, "")
        if secret and len(plain) >= 4:  # masking "1" everywhere would garble output
            out.append(plain)
    return out


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret replaced by ***, in strings, lists and dicts."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    return value


def blocked_reason(address: IPAddress) -> str | None:
    """Why requests to ``address`` are refused by default, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    return None


async def check_destination(url: str, settings: Settings, timeout_s: float) -> Failure | None:
    """Resolve ``url``'s host and check every address it resolves to.

    Returns the failure (the name does not resolve, or an address is blocked) or None
    when the request may go ahead. No connection is opened here.

    The HTTP client resolves the name again when it connects, so a DNS server that
    answers differently the second time is not caught; the check stops configured URLs
    and ordinary names that point at metadata endpoints.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    if not host:
        return Failure("invalid", f"{url} has no host")
    allowed = settings.tool_allow_link_local
    if not allowed and host.rstrip(".").lower() in METADATA_HOSTS:
        return Failure("blocked", f"{host} is a cloud metadata endpoint; requests there are "
                                  f"blocked (set {ALLOW_SETTING}=true to allow them)")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        return Failure("dns", f"DNS lookup of {host} timed out after {timeout_s:g}s",
                       retryable=True)
    except socket.gaierror as exc:
        return Failure("dns", f"DNS failure: cannot resolve host {host!r} ({exc.strerror})",
                       retryable=exc.errno == socket.EAI_AGAIN)
    except UnicodeError as exc:
        return Failure("dns", f"DNS failure: {host!r} is not a valid host name ({exc})")
    if allowed:
        return None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        reason = blocked_reason(address)
        if reason:
            shown = host if host == str(address) else f"{host} resolves to {address}, which"
            return Failure("blocked", f"{shown} is {reason}; requests there are blocked "
                                      f"(set {ALLOW_SETTING}=true to allow them)")
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups, once each."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


TIMEOUTS = (TimeoutError, httpx.TimeoutException, httpx2.TimeoutException)
STATUS_ERRORS = (httpx.HTTPStatusError, httpx2.HTTPStatusError)
NETWORK_ERRORS = (httpx.TransportError, httpx2.TransportError, ConnectionError)


def network_failure(exc: BaseException, url: str, timeout_s: float) -> Failure | None:
    """The reason a connection to ``url`` failed, if ``exc`` is a network failure."""
    chain = [e for e in exception_chain(exc) if not isinstance(e, asyncio.CancelledError)]
    if any(isinstance(e, socket.gaierror) for e in chain):
        return Failure("dns", f"DNS failure: cannot resolve the host of {url}")
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return Failure("tls", f"TLS error talking to {url}: {reason}")
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return Failure("refused", f"connection refused by {url}", retryable=True)
    if any(isinstance(e, TIMEOUTS) for e in chain):
        return Failure("timeout", f"timed out after {timeout_s:g}s talking to {url}",
                       retryable=True)
    status = next((e for e in chain if isinstance(e, STATUS_ERRORS)), None)
    if status is not None:
        return status_failure(status.response.status_code, url)
    network = next((e for e in chain if isinstance(e, NETWORK_ERRORS)), None)
    if network is not None:
        return Failure("connection", f"connection to {url} failed: "
                                     f"{type(network).__name__}: {network}", retryable=True)
    return None


def status_failure(status: int, url: str, detail: str = "") -> Failure:
    """A non-2xx answer: 429 and 5xx may pass, other statuses will not."""
    return Failure("http_status", f"HTTP {status} from {url}{': ' + detail if detail else ''}",
                   retryable=status == 429 or status >= 500)


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


def cut_text(text: str, limit: int, unread: bool = False, total: str | None = None) -> str:
    """``text`` kept to ``limit`` characters, saying it was cut. ``unread``: the source
    had more than ``text`` (``total`` says how much, when known)."""
    if not unread:
        return truncate(text, limit)
    size = f"{total} bytes" if total else f"more than {limit} characters"
    return text[:limit] + f"... [truncated: the response has {size}]"


async def call_http(name: str, config: dict[str, Any], input_schema: dict[str, Any] | None,
                    arguments: dict[str, Any], call_id: str, secret_key: str,
                    settings: Settings | None = None) -> ToolOutcome:
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
        return ToolOutcome(ok=False, error=message,
                           latency_ms=(time.perf_counter() - started) * 1000)

    refused = await check_destination(url, settings, timeout_s)
    if refused is not None:
        return failed(refused)
    try:
        revealed = reveal(config.get("headers"), secret_key)
    except SecretDecryptionError as exc:
        return failed(Failure("invalid", f"a secret header cannot be used: {exc}"))
    secrets = secret_values(config.get("headers"), revealed, all_secret=False)
    # The same call_id on every retry of one call, so the service can deduplicate.
    headers = {**revealed, "Idempotency-Key": call_id}
    in_query = method in ("GET", "DELETE")
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http, http.stream(
            method, url, headers=headers, params=arguments if in_query else None,
            json=None if in_query else arguments,
        ) as response:
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
        return ToolOutcome(ok=False, output=output, latency_ms=latency_ms,
                           error=scrub(f"{name}: HTTP {response.status_code} from {url}: "
                                       f"{truncate(text, 500)}", secrets))
    return ToolOutcome(ok=True, output=output, latency_ms=latency_ms)
