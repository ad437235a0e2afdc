"""Where a tool may connect, and why a connection failed: shared by the HTTP tool client
and the MCP client's HTTP transports.

- ``resolve_destination``: resolve the host once and check the address: loopback,
  private and other non-public addresses are refused unless ``KEEL_TOOLS_ALLOW_PRIVATE``
  is set; link-local and cloud-metadata addresses (``169.254.0.0/16``, ``fe80::/10``,
  ``169.254.169.254``, ``fd00:ec2::254``, ``metadata.google.internal``) also need
  ``KEEL_TOOL_ALLOW_LINK_LOCAL``. The request then goes to that very address
  (``PinnedTransport``: Host header and TLS server name kept), so a DNS server that
  answers differently the second time changes nothing.
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
from typing import Any

import httpx
import httpx2

from infra.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints: by name (checked before any DNS query) and by address.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    }
)
ALLOW_SETTING = "KEEL_TOOL_ALLOW_LINK_LOCAL"
PRIVATE_SETTING = "KEEL_TOOLS_ALLOW_PRIVATE"


@dataclass
class Failure:
    """Why a connection attempt failed. ``kind`` is one of dns, refused, timeout, tls,
    http_status, connection, protocol, blocked, invalid, not_allowed, process_exited,
    spawn_failed."""

    kind: str
    message: str
    retryable: bool = False


def blocked_reason(address: IPAddress, settings: Settings) -> tuple[str, str] | None:
    """Why requests to ``address`` are refused, and the setting that allows them; None
    when they may go."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not settings.tool_allow_link_local:
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address", ALLOW_SETTING
        if address.is_link_local:
            return "a link-local address", ALLOW_SETTING
    if not settings.tools_allow_private and (not address.is_global or address.is_multicast):
        kind = (
            "a loopback"
            if address.is_loopback
            else "a private"
            if address.is_private
            else "a non-public"
        )
        return f"{kind} address", PRIVATE_SETTING
    return None


@dataclass(frozen=True)
class Destination:
    """Where a tool's request goes: its URL's host, and the checked address to connect to."""

    host: str
    address: str


async def resolve_destination(
    url: str, settings: Settings, timeout_s: float
) -> Destination | Failure:
    """Resolve ``url``'s host once and check the address the request will go to; the
    failure (the name does not resolve, or the address is refused) or the destination.
    No connection is opened here: pass the destination to ``PinnedTransport``."""
    parsed = httpx.URL(url)
    host = parsed.host
    if not host:
        return Failure("invalid", f"{url} has no host")
    if not settings.tool_allow_link_local and host.rstrip(".").lower() in METADATA_HOSTS:
        return Failure(
            "blocked",
            f"{host} is a cloud metadata endpoint; requests there are "
            f"blocked (set {ALLOW_SETTING}=true to allow them)",
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        return Failure(
            "dns", f"DNS lookup of {host} timed out after {timeout_s:g}s", retryable=True
        )
    except socket.gaierror as exc:
        return Failure(
            "dns",
            f"DNS failure: cannot resolve host {host!r} ({exc.strerror})",
            retryable=exc.errno == socket.EAI_AGAIN,
        )
    except UnicodeError as exc:
        return Failure("dns", f"DNS failure: {host!r} is not a valid host name ({exc})")
    # Every address the name has must pass (a name with one public and one private
    # address is refused), and the first is the one connected to.
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        return Failure("dns", f"DNS failure: {host!r} has no address")
    for address in addresses:
        blocked = blocked_reason(address, settings)
        if blocked:
            reason, setting = blocked
            shown = host if host == str(address) else f"{host} resolves to {address}, which"
            return Failure(
                "blocked",
                f"{shown} is {reason}; requests there are blocked "
                f"(set {setting}=true to allow them)",
            )
    return Destination(host=host, address=str(addresses[0]))


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends every request for ``destination.host`` to ``destination.address``: the URL's
    host becomes the address, the Host header and the TLS server name (SNI, and the name
    the certificate is checked against) stay the host's. A request for any other host
    is refused: redirects are not followed, and nothing else may go elsewhere.

    Works with ``httpx`` and ``httpx2`` (same request model); ``inner`` is the
    library's own transport."""

    def __init__(self, destination: Destination, inner: Any, refuse: type[Exception]) -> None:
        self.destination = destination
        self.inner = inner
        self.refuse = refuse

    async def handle_async_request(self, request: Any) -> Any:
        if request.url.host != self.destination.host:
            raise self.refuse(
                f"refused: {request.url.host} is not the tool's host {self.destination.host}"
            )
        request.url = request.url.copy_with(host=self.destination.address)
        request.extensions = {**request.extensions, "sni_hostname": self.destination.host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


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
        return Failure(
            "timeout", f"timed out after {timeout_s:g}s talking to {url}", retryable=True
        )
    status = next((e for e in chain if isinstance(e, STATUS_ERRORS)), None)
    if status is not None:
        return status_failure(status.response.status_code, url)
    network = next((e for e in chain if isinstance(e, NETWORK_ERRORS)), None)
    if network is not None:
        return Failure(
            "connection",
            f"connection to {url} failed: {type(network).__name__}: {network}",
            retryable=True,
        )
    return None


def status_failure(status: int, url: str, detail: str = "") -> Failure:
    """A non-2xx answer: 429 and 5xx may pass, other statuses will not."""
    return Failure(
        "http_status",
        f"HTTP {status} from {url}{': ' + detail if detail else ''}",
        retryable=status == 429 or status >= 500,
    )
