"""``keel watch ID``: an execution's events live, one JSON object per line, until it ends.

It rides through API restarts: when the API closes the stream for a restart (1012,
or 1001 going away) or the connection drops, it reconnects, to the same address
(a restarted API, or another replica behind a load balancer), asking for the events
after the last one it printed. No event is printed twice: a reconnection starts
after that event, and anything at or before it is skipped all the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import IO

import websockets
from websockets.exceptions import InvalidHandshake

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger("keel.watch")

CLOSE_NORMAL = 1000
# Close codes after which the same stream can be resumed elsewhere: the server is going
# away (1001), restarting (1012) or overloaded (1013), or the connection dropped (1006).
RESUMABLE = {1001, 1006, 1012, 1013}
RECONNECT_FIRST_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 5.0
# Give up when no connection could be made for this long.
RECONNECT_FOR_S = 120.0


class Watch:
    """One follower of one execution; ``last_seq`` is the last event printed."""

    def __init__(
        self, api: str, execution_id: int, after: int, out: IO[str], api_key: str | None = None
    ) -> None:
        self.api = api.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.url = self.api.replace("http", "ws", 1) + f"/api/v1/Execution/ws/{execution_id}"
        self.execution_id = execution_id
        self.last_seq = after
        self.out = out

    def _emit(self, message: str | bytes) -> None:
        event = json.loads(message)
        if event["seq"] <= self.last_seq:
            return  # already printed before a reconnection
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()
        self.last_seq = event["seq"]

    async def _stream_once(self) -> tuple[int, str]:
        """Print events until this connection closes; its close code and reason."""
        async with websockets.connect(
            f"{self.url}?after={self.last_seq}", additional_headers=self.headers
        ) as ws:
            try:
                async for message in ws:
                    self._emit(message)
            except websockets.ConnectionClosed:
                pass  # abnormal closes land here; the code is read below
            return ws.close_code or 1006, ws.close_reason or ""

    async def follow(self) -> int:
        connected = False
        lost_since: float | None = None
        delay = RECONNECT_FIRST_DELAY_S
        while True:
            try:
                code, reason = await self._stream_once()
                connected = True
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if not connected:
                    sys.stderr.write(f"keel: cannot reach the API at {self.api}: {exc}\n")
                    return 1
                code, reason = 1006, f"{type(exc).__name__}: {exc}"
            else:
                lost_since, delay = None, RECONNECT_FIRST_DELAY_S
            if code == CLOSE_NORMAL:
                return 0
            if code not in RESUMABLE:
                sys.stderr.write(f"keel: the API closed the stream ({code}): {reason}\n")
                return 1
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            if now - lost_since > RECONNECT_FOR_S:
                sys.stderr.write(
                    f"keel: could not reconnect to {self.api} for "
                    f"{RECONNECT_FOR_S:.0f}s (last: {code} {reason})\n"
                )
                return 1
            log.warning(
                "stream interrupted; reconnecting",
                execution_id=self.execution_id,
                code=code,
                reason=reason,
                after=self.last_seq,
                in_s=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_S)


def watch(
    settings: Settings,
    execution_id: int,
    *,
    after: int = 0,
    api: str | None = None,
    api_key: str | None = None,
) -> int:
    """Follow ``execution_id`` from the event after ``after`` (as ``api_key``'s holder);
    the exit code."""
    base = api or f"http://{settings.api_host}:{settings.api_port}"
    return asyncio.run(Watch(base, execution_id, after, sys.stdout, api_key).follow())
