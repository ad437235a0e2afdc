"""A worker's Prometheus endpoints: Keel's metrics (``infra.metrics``, served by
``prometheus_client``) and the Temporal SDK's own (served by the SDK's runtime), each
on its own port when the settings give one."""

from __future__ import annotations

from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger("keel.worker")


def serve_metrics(settings: Settings) -> None:
    """Start the endpoints the settings ask for; call before connecting to Temporal
    (the SDK's metrics come from the runtime the process's clients are made with)."""
    host = settings.metrics_host
    if settings.temporal_metrics_port is not None:
        address = f"{host}:{settings.temporal_metrics_port}"
        Runtime.set_default(
            Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address))),
            error_if_already_set=True,
        )
        log.info("serving the Temporal SDK's metrics", address=address)
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=host)
        log.info("serving Keel's worker metrics", address=f"{host}:{settings.worker_metrics_port}")
