"""Where a tool may connect, and why a connection failed: shared by the HTTP tool client
and the MCP client's HTTP transports.

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
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import httpx2

from infra.settings import Settings

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


