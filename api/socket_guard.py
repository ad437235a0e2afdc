"""Open WebSockets by the credential that opened them, so that revoking an API key
(or removing a member) closes that principal's sockets.

A revocation on this replica closes its sockets at once (``revoked``); sockets on
other replicas close within ``interval_s``, when the guard's check finds the key
revoked, expired, or the membership gone. The check runs only while sockets are open.

Use in a WebSocket route, after ``websocket_caller``:

    async with app.state.socket_guard.watching(caller, websocket):
        ... stream events ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import WebSocket
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.principal import CLOSE_UNAUTHORIZED
from infra.accounts import Caller, caller_for
from infra.logging import get_logger

log = get_logger(__name__)


class SocketGuard:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval_s: float = 5.0) -> None:
        self._sessions = sessions
        self.interval_s = interval_s
        self._open: dict[WebSocket, Caller] = {}
        self._checker: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self, caller: Caller, websocket: WebSocket) -> AsyncIterator[None]:
        self._open[websocket] = caller
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_forever(), name="socket-guard")
        try:
            yield
        finally:
            self._open.pop(websocket, None)

    async def revoked(self, principal_type: str, principal_id: int) -> int:
        """Close this replica's sockets of that principal now; how many were closed."""
        doomed = [
            ws
            for ws, caller in self._open.items()
            if (caller.principal.type, caller.principal.id) == (principal_type, principal_id)
        ]
        for websocket in doomed:
            await self._close(websocket, "the credential was revoked")
        return len(doomed)

    async def check(self) -> None:
        """Close every socket whose credential no longer holds (one query per principal)."""
        principals = {
            (c.principal.type, c.principal.id, c.workspace_id)
            for c in self._open.values()
            if c.principal.id is not None
        }
        gone = set()
        async with self._sessions() as session:
            for kind, ident, workspace_id in principals:
                assert ident is not None
                if await caller_for(session, kind, ident, workspace_id) is None:
                    gone.add((kind, ident))
        for websocket, caller in list(self._open.items()):
            if (caller.principal.type, caller.principal.id) in gone:
                await self._close(websocket, "the credential was revoked")

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker

    async def _check_forever(self) -> None:
        while self._open:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # a database hiccup must not stop the guard
                log.exception("socket guard check failed")

    async def _close(self, websocket: WebSocket, reason: str) -> None:
        self._open.pop(websocket, None)
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(CLOSE_UNAUTHORIZED, reason)
