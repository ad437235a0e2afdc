"""The API's Prometheus metrics: ``GET /metrics``, and the middleware that times every
HTTP request by method, route template and status (``infra.metrics`` declares them).

The middleware is plain ASGI and does one histogram observation per request: the
route template is read from the scope the router filled in (no route matching of
its own), so it costs a request a few microseconds (docs/observability.md).
"""

from __future__ import annotations

import time
from collections.abc import Sized
from typing import Protocol
from weakref import WeakSet

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.metrics import EVENT_FEEDS, HTTP_REQUEST_SECONDS

METRICS_PATH = "/metrics"
# Paths no route matched (404s, scanners) share one label value: never the raw path.
UNMATCHED = "<unmatched>"
# Methods are labelled as sent only if they are HTTP's; anything else is OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HasFeeds(Protocol):
    @property
    def feeds(self) -> Sized: ...


# The event hubs of this process (one per app; tests make several): the feeds gauge is
# read from them when scraped, so following an execution costs nothing extra.
_hubs: WeakSet[HasFeeds] = WeakSet()
EVENT_FEEDS.set_function(lambda: sum(len(hub.feeds) for hub in list(_hubs)))


def count_feeds_of(hub: HasFeeds) -> None:
    """Count ``hub.feeds`` in ``keel_event_feeds`` for as long as the hub lives."""
    _hubs.add(hub)


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Each series' child, found once (``labels()`` takes a lock and builds a key).
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            key = (method, getattr(scope.get("route"), "path", UNMATCHED), code)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = HTTP_REQUEST_SECONDS.labels(*key[:2], str(code))
            series.observe(time.perf_counter() - started)


async def metrics(_request: Request) -> Response:
    """Every metric of this process in Prometheus' text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """``/metrics`` (no credential: scrapers have none; it holds counts, never data) and
    the request-timing middleware, inside the path-rewriting one so it sees the route."""
    app.add_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(RequestMetricsMiddleware)
