"""The HTTP tool client: destinations it refuses, failures it names, bodies it cuts.
Every server is on loopback; the link-local checks prove no request leaves by routing
everything through a loopback proxy that would see it."""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from infra.tools.common import RetryableToolError
from infra.tools.http import call_http
from infra.tools.network import Destination, Failure, blocked_reason, resolve_destination
from tests.support.fake_http import Behaviour, HttpToolService
from tests.support.fake_mcp import McpHttpService
from tests.support.net import UNRESOLVABLE_HOST, free_port
from tests.support.settings import make_settings

KEY = "test-secret-key-that-is-long-enough-0123456789"


def tool_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings("sqlite+aiosqlite:///unused.db", tmp_path, **overrides)


async def call(
    url: str, settings: Settings, arguments: dict[str, Any] | None = None, **config: Any
) -> Any:
    return await call_http(
        "lookup",
        {"url": url, "method": "POST", **config},
        None,
        arguments or {"q": "x"},
        "call-1",
        KEY,
        settings,
    )


@pytest.mark.parametrize(
    ("address", "reason", "private_allowed"),
    [
        ("169.254.169.254", "a cloud metadata address", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address", "a cloud metadata address"),
        ("169.254.10.1", "a link-local address", "a link-local address"),
        ("fe80::1", "a link-local address", "a link-local address"),
        ("127.0.0.1", "a loopback address", None),
        ("::1", "a loopback address", None),
        ("::ffff:127.0.0.1", "a loopback address", None),
        ("10.0.0.5", "a private address", None),
        ("192.168.1.10", "a private address", None),
        ("0.0.0.0", "a private address", None),
        ("100.64.0.1", "a non-public address", None),
        ("93.184.216.34", None, None),
    ],
)
def test_blocked_addresses(
    address: str, reason: str | None, private_allowed: str | None, tmp_path: Path
) -> None:
    strict = tool_settings(tmp_path, tools_allow_private=False)
    found = blocked_reason(ipaddress.ip_address(address), strict)
    assert (found[0] if found else None) == reason
    found = blocked_reason(ipaddress.ip_address(address), tool_settings(tmp_path))
    assert (found[0] if found else None) == private_allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8080/x",
        "http://[::ffff:169.254.169.254]/latest",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./computeMetadata/v1/",
    ],
)
async def test_link_local_and_metadata_are_refused_before_any_request(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with HttpToolService() as proxy:
        # Were a request made, it would go through this loopback proxy and be counted.
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        outcome = await call(url, tool_settings(tmp_path))
    assert not outcome.ok
    assert outcome.error.startswith("lookup: ")
    assert "requests there are blocked (set KEEL_TOOL_ALLOW_LINK_LOCAL=true" in outcome.error
    assert proxy.calls == {}


async def test_the_setting_lets_link_local_through(tmp_path: Path) -> None:
    allowed = tool_settings(tmp_path, tool_allow_link_local=True)
    assert await resolve_destination("http://169.254.169.254/latest", allowed, 5) == Destination(
        "169.254.169.254", "169.254.169.254"
    )


async def test_private_addresses_are_refused_by_default(tmp_path: Path) -> None:
    strict = tool_settings(tmp_path, tools_allow_private=False)
    async with HttpToolService() as service:
        service.behaviours["x"] = Behaviour(body={"ok": True})
        outcome = await call(service.url("x"), strict)
        assert outcome.error is not None and "a loopback address" in outcome.error
        assert "KEEL_TOOLS_ALLOW_PRIVATE=true" in outcome.error
        local = await call(service.url("x").replace("127.0.0.1", "localhost"), strict)
        assert local.error is not None and "localhost resolves to" in local.error
        assert service.calls == {}


async def test_the_request_goes_to_the_address_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DNS answer that changes between the check and the connection (rebinding) does
    not matter: the connection is made to the address checked, the Host header kept."""
    from infra.tools import network

    async with HttpToolService() as service:
        service.behaviours["x"] = Behaviour(body={"ok": True})
        answers = iter(["127.0.0.1"])
        real = network.resolve_destination

        async def once(url: str, settings: Settings, timeout_s: float) -> Any:
            found = await real(url, settings, timeout_s)
            assert isinstance(found, Destination)
            return Destination(found.host, next(answers))  # a second lookup would fail

        monkeypatch.setattr("infra.tools.http.resolve_destination", once)
        outcome = await call(
            service.url("x").replace("127.0.0.1", "localhost"), tool_settings(tmp_path)
        )
        assert outcome.ok, outcome.error
        assert service.requests[-1]["headers"]["host"].startswith("localhost:")


async def test_resolve_destination_names_what_it_resolved(tmp_path: Path) -> None:
    settings = tool_settings(tmp_path)
    local = await resolve_destination("http://localhost:1/x", settings, 5)
    assert isinstance(local, Destination) and local.host == "localhost"
    assert local.address in ("127.0.0.1", "::1")
    assert await resolve_destination("http://127.0.0.1:1/x", settings, 5) == Destination(
        "127.0.0.1", "127.0.0.1"
    )
    failure = await resolve_destination(f"http://{UNRESOLVABLE_HOST}/x", settings, 5)
    assert isinstance(failure, Failure) and failure.kind == "dns" and not failure.retryable
    assert failure.message.startswith(f"DNS failure: cannot resolve host '{UNRESOLVABLE_HOST}'")


async def test_loopback_works_and_long_bodies_are_cut(tmp_path: Path) -> None:
    settings = tool_settings(tmp_path, tool_max_response_chars=1000)
    async with HttpToolService() as service:
        service.behaviours["big"] = Behaviour(body={"text": "y" * 50_000})
        service.behaviours["small"] = Behaviour(body={"text": "y" * 500})
        big = await call(service.url("big"), settings)
        small = await call(service.url("small"), settings)
    assert big.ok and big.output["status"] == 200
    body = big.output["body"]
    assert isinstance(body, str) and len(body) < 1100
    assert body.startswith('{"text":"yyy')
    size = len('{"text":""}') + 50_000
    assert body.endswith(f"... [truncated: the response has {size} bytes]")
    assert small.output == {"status": 200, "body": {"text": "y" * 500}}


async def test_failures_are_named(tmp_path: Path) -> None:
    settings = tool_settings(tmp_path)
    url = f"http://127.0.0.1:{free_port()}/lookup"
    refused = f"^lookup: connection refused by {re.escape(url)}$"
    with pytest.raises(RetryableToolError, match=refused):
        await call(url, settings)
    dns = await call(f"http://{UNRESOLVABLE_HOST}/lookup", settings)
    assert dns.error.startswith(f"lookup: DNS failure: cannot resolve host '{UNRESOLVABLE_HOST}'")
    async with HttpToolService() as service:
        service.behaviours["gone"] = Behaviour(status=404, body={"error": "no such thing"})
        service.behaviours["down"] = Behaviour(fail_times=1)
        tls = await call(service.url("lookup").replace("http:", "https:"), settings)
        gone = await call(service.url("gone"), settings)
        with pytest.raises(RetryableToolError, match=r"^lookup: HTTP 500 from "):
            await call(service.url("down"), settings)
    assert tls.error.startswith("lookup: TLS error talking to https://127.0.0.1:")
    assert not gone.ok and gone.output == {"status": 404, "body": {"error": "no such thing"}}
    assert gone.error == (
        f'lookup: HTTP 404 from {service.url("gone")}: {{"error":"no such thing"}}'
    )


async def test_slow_server_times_out(tmp_path: Path) -> None:
    async with McpHttpService(delay_s=30) as slow:  # holds every request back
        started = time.monotonic()
        expected = rf"^lookup: timed out after 0\.5s talking to {re.escape(slow.url)}$"
        with pytest.raises(RetryableToolError, match=expected):
            await call(slow.url, tool_settings(tmp_path), timeout_s=0.5)
        assert time.monotonic() - started < 5
