"""``python -m bench.metrics_middleware``: what the request-metrics middleware costs a
request (a do-nothing ASGI app with and without it, 20,000 requests, best of three).
A benchmark, not a test: timings belong here, not in the test-suite."""

from __future__ import annotations

import asyncio
import time

from starlette.types import Receive, Scope, Send

from api.metrics import RequestMetricsMiddleware


async def measure() -> None:
    """The middleware around a do-nothing ASGI app against the app alone."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        return None

    class Route:
        path = "/api/v1/Agent/{agent_id}"

    scope = {"type": "http", "method": "GET", "path": "/api/v1/Agent/1", "route": Route()}
    metered = RequestMetricsMiddleware(endpoint)
    rounds = 20_000

    async def timed(app: object) -> float:
        best = float("inf")
        for _ in range(3):  # the best of three: the least disturbed by other work
            started = time.perf_counter()
            for _ in range(rounds):
                await app(dict(scope), receive, send)  # type: ignore[operator]
            best = min(best, time.perf_counter() - started)
        return best / rounds

    bare, with_metrics = await timed(endpoint), await timed(metered)
    cost_us = (with_metrics - bare) * 1e6
    print(
        f"\nrequest-metrics middleware: {cost_us:.2f} us per request "
        f"(app alone {bare * 1e6:.2f} us, with it {with_metrics * 1e6:.2f} us)"
    )


if __name__ == "__main__":
    asyncio.run(measure())
