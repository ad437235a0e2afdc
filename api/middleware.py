"""ASGI middleware: request id + one log line per request, and the body size limit.

Written as plain ASGI (not BaseHTTPMiddleware) so WebSockets and streaming pass
through untouched and an unhandled error still gets the envelope *with* the
request id header.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.logging import get_logger

log = get_logger("keel.request")

REQUEST_ID_HEADER = b"x-request-id"
COLLECTION_PATH = re.compile(r"^/api/v1/[A-Za-z]+$")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body is read. An HTTPException, so FastAPI's body parsing lets it
    through (instead of turning it into a 400) and the handlers render the 413 envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes "
                              "(KEEL_MAX_REQUEST_BYTES)")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


async def _send_envelope(send: Send, status: int, msg: str, data: Any, request_id: str) -> None:
    body = json.dumps({"code": status, "msg": msg, "data": data}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER, request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if COLLECTION_PATH.match(scope["path"]):
            # /api/v1/Agent means /api/v1/Agent/: serve it, don't redirect (a redirected
            # POST is replayed as GET by some clients and lost by others).
            scope = {**scope, "path": scope["path"] + "/",
                     "raw_path": scope.get("raw_path", b"").split(b"?")[0] + b"/"}
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500
        response_started = False

        declared = next(
            (int(v) for k, v in scope.get("headers", []) if k == b"content-length" and v.isdigit()),
            None,
        )
        limit = self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [h for h in message.get("headers", []) if h[0] != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge as exc:
            status = 413
            if not response_started:
                await _send_envelope(send, 413, exc.detail, None, request_id)
        except Exception:
            status = 500
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not response_started:
                await _send_envelope(
                    send,
                    500,
                    "internal error; report this request id to the operator",
                    {"request_id": request_id},
                    request_id,
                )
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
