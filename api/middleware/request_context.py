"""What lives as long as a request: its id (``X-Request-ID``: the client's if it is safe,
else ours), bound to every log line of the request; its database session; one log line
per request; and the 500 envelope, with that id, for an error nothing else handled."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette import status
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import envelope
from infra.logging import get_logger

log = get_logger("keel.request")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    """The client's request id if it cannot forge log lines or headers, else a new one."""
    candidate = Headers(scope=scope).get(REQUEST_ID_HEADER)
    if candidate is not None and _SAFE_REQUEST_ID.match(candidate):
        return candidate
    return uuid.uuid4().hex


_SESSION = "keel_session"  # the request's session, in the scope's state


def request_session(request: Request) -> AsyncSession:
    """The request's database session: opened on first use, closed by the middleware below
    once the response is sent (when FastAPI would close it for a ``yield`` dependency).

    Dependencies take it from here rather than from a ``yield`` dependency of their own:
    FastAPI's exit machinery for one (an exit stack and a shielded cancel scope per
    request) was a tenth of a cached read's CPU."""
    state = request.scope.setdefault("state", {})
    session: AsyncSession | None = state.get(_SESSION)
    if session is None:
        session = state[_SESSION] = request.app.state.sessions()
    return session


async def _close_session(scope: Scope) -> None:
    session: AsyncSession | None = scope.get("state", {}).pop(_SESSION, None)
    if session is not None:
        await session.close()  # rolls back what was not committed


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                await _close_session(scope)
            return

        started = time.perf_counter()
        code = status.HTTP_500_INTERNAL_SERVER_ERROR
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal code, response_started
            if message["type"] == "http.response.start":
                code = message["status"]
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            code = status.HTTP_500_INTERNAL_SERVER_ERROR
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not response_started:
                response = envelope(
                    code,
                    "internal error; report this request id to the operator",
                    {"request_id": request_id},
                    headers={REQUEST_ID_HEADER: request_id},
                )
                await response(scope, receive, send)
        finally:
            try:
                await _close_session(scope)
            finally:  # the request's line is written even if the database fails the close
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=code,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
