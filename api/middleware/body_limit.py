"""A request body over the limit (``KEEL_MAX_REQUEST_BYTES``) is refused with a 413
envelope: at once when Content-Length says so, else as soon as the body read so far
passes the limit."""

from __future__ import annotations

from starlette import status
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import envelope


class BodyTooLarge(HTTPException):
    """Raised while the body is read. An HTTPException, so FastAPI's body parsing lets it
    through (instead of turning it into a 400) and the handlers render the 413 envelope."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body is larger than the limit of {limit} bytes (KEEL_MAX_REQUEST_BYTES)",
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if not declared and "transfer-encoding" not in headers:
            # HTTP/1.1: a request with neither header has no body (most GETs): nothing to
            # limit, so no wrapped receive and send on the request's path.
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not response_started:
                await envelope(exc.status_code, exc.detail)(scope, receive, send)
