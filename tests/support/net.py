"""Loopback networking for the tests."""

from __future__ import annotations

import socket

# A host no resolver is ever asked about: longer than DNS allows (253 characters), so
# getaddrinfo fails on this machine without sending a query. Tests talk to loopback only.
UNRESOLVABLE_HOST = ".".join(["a" * 60] * 5) + ".invalid"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
