"""OpenTelemetry traces: from the HTTP request through the Temporal workflow to each
activity and each outgoing HTTP call (model and tool calls).

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set: then ``configure_tracing`` exports spans over OTLP/HTTP, configured by the
standard ``OTEL_*`` variables (headers, timeout, ``OTEL_SERVICE_NAME``...). While it
is on, ``api.main`` instruments the FastAPI app, ``infra.temporal.connect`` gives
the Temporal client (and so the workers built on it) ``TracingInterceptor``, and
every httpx client makes a span per request. The model call (the OpenAI SDK speaks
httpx2, which no instrumentation knows) and each tool call get a span of ours
(``tracer``), named and described as OpenTelemetry's GenAI conventions say.

Tests turn it on with their own provider (an in-memory exporter) through
``use_tracer_provider`` and off again with ``stop_tracing``.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

from infra.logging import get_logger

log = get_logger("keel.tracing")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACER_NAME = "keel"

_provider: TracerProvider | None = None


def tracer_provider() -> TracerProvider | None:
    """The provider spans go to, or None: tracing is off."""
    return _provider


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Turn tracing on for this process if an OTLP endpoint is configured (once; later
    calls return the provider in use)."""
    if _provider is not None:
        return _provider
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    # Imported only when used: the exporter brings requests and protobuf along.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    log.info("tracing on: exporting spans over OTLP", service=name)
    return provider


def use_tracer_provider(provider: TracerProvider) -> None:
    """Send Keel's spans to ``provider`` from now on (apps and clients made after this)."""
    global _provider
    _provider = provider
    httpx_instrumentor = HTTPXClientInstrumentor()
    if httpx_instrumentor.is_instrumented_by_opentelemetry:
        httpx_instrumentor.uninstrument()
    httpx_instrumentor.instrument(tracer_provider=provider)


def stop_tracing() -> None:
    """Stop making spans (apps and clients made after this); flushes what is pending."""
    global _provider
    if _provider is None:
        return
    HTTPXClientInstrumentor().uninstrument()
    _provider.force_flush()
    _provider = None


def tracer() -> trace.Tracer:
    """Keel's tracer: spans go to the provider in use, or nowhere while tracing is off."""
    return _provider.get_tracer(TRACER_NAME) if _provider is not None else trace.NoOpTracer()


def temporal_interceptors() -> list[Interceptor]:
    """For ``Client.connect``: the tracing interceptor (client and worker) when tracing
    is on, else none."""
    if _provider is None:
        return []
    return [TracingInterceptor(_provider.get_tracer(TRACER_NAME))]
