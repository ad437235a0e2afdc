"""A collection's path without its trailing slash is served as the one with it."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

COLLECTION_PATH = re.compile(r"^/api/v1/[A-Za-z]+$")


class CollectionPathMiddleware:
    """``/api/v1/Agent`` means ``/api/v1/Agent/``: serve it, don't redirect (a redirected
    POST is replayed as GET by some clients and lost by others)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and COLLECTION_PATH.match(scope["path"]):
            scope = {
                **scope,
                "path": scope["path"] + "/",
                "raw_path": scope.get("raw_path", b"").split(b"?")[0] + b"/",
            }
        await self.app(scope, receive, send)
