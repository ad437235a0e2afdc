"""The Keel HTTP and WebSocket API. ``uvicorn api.main:app`` or ``keel api`` runs it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from api.caller_cache import CallerCache
from api.errors import install_error_handlers
from api.metrics import install_metrics
from api.middleware.body_limit import BodyLimitMiddleware
from api.middleware.collection_paths import CollectionPathMiddleware
from api.middleware.request_context import RequestContextMiddleware
from api.routes import (
    agents,
    api_keys,
    auth,
    billing,
    executions,
    health,
    tools,
    workflows,
    workspaces,
)
from api.services.event_hub import EventHub
from api.socket_guard import SocketGuard
from api.viewer import install_docs, install_viewer
from infra.db import create_engine, session_factory
from infra.heap import settle_startup_heap
from infra.logging import configure_logging, get_logger
from infra.security.rate_limit import RateLimiter
from infra.security.throttle import FailureThrottle
from infra.settings import Settings, get_settings
from infra.temporal import connect
from infra.tracing import configure_tracing, tracer_provider

log = get_logger("keel.api")

DESCRIPTION = """Durable AI-agent orchestration. Every response is an envelope
`{"code": 0, "msg": "success", "data": ...}`; errors carry the HTTP status as `code`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Before the lifespan connects to Temporal: the client gets the tracing interceptor.
    configure_tracing("keel-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        engine = create_engine(settings.resolved_database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        # Lazy: the API starts (and /health says why) even while Temporal is down.
        app.state.temporal = await connect(settings, lazy=True)
        app.state.event_hub = EventHub(app.state.temporal, app.state.sessions)
        app.state.socket_guard = SocketGuard(app.state.sessions)
        app.state.login_throttle = FailureThrottle(
            settings.login_max_failures, settings.login_lockout_s
        )
        # Credentials verified in the last few seconds (KEEL_CREDENTIAL_CACHE_S).
        app.state.callers = CallerCache(settings.credential_cache_s)
        app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        log.info(
            "api started",
            database=engine.url.render_as_string(hide_password=True),
            temporal=settings.temporal_address,
        )
        try:
            yield
        finally:
            await app.state.event_hub.close()
            await app.state.socket_guard.close()
            await engine.dispose()

    app = FastAPI(
        title="Keel",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=True,
        docs_url=None,  # served from vendored assets by install_docs, not a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_request_bytes)
    install_metrics(app)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(CollectionPathMiddleware)
    for module in (
        health,
        auth,
        workspaces,
        api_keys,
        agents,
        tools,
        workflows,
        executions,
        billing,
    ):
        app.include_router(module.router)
    install_viewer(app)
    install_docs(app)
    provider = tracer_provider()
    if provider is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="/metrics")
    return app


# On shutdown, watchers get what this process already has before their streams close.
DRAIN_TIMEOUT_S = 3.0


class DrainingServer(uvicorn.Server):
    """uvicorn, but a shutdown first stops taking connections and drains the event hub,
    so every watcher gets the events already here, then a 1012 close (resume on another
    replica with ``after``), before uvicorn closes what is left."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the app's lifespan has started by now
        settle_startup_heap()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        hub: EventHub | None = getattr(self.app.state, "event_hub", None)
        if hub is not None:
            await hub.drain(DRAIN_TIMEOUT_S)
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    """``keel api``: serve until SIGINT/SIGTERM, then drain and stop."""
    app = create_app(settings)
    DrainingServer(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,  # our JSON logging (configure_logging), not uvicorn's
            access_log=False,  # RequestContextMiddleware logs each request, once
            # Open WebSockets must not hold a shutdown forever.
            timeout_graceful_shutdown=5,
            # Events are small JSON; compressing each one per watcher costs more CPU than
            # it saves on loopback and LAN links.
            ws_per_message_deflate=False,
        ),
        app,
    ).run()


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app`: build the app on first access, not at import time.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
