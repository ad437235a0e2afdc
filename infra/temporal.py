"""Temporal client, data converter and the search attributes operators filter by."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

from infra.settings import Settings
from infra.tracing import temporal_interceptors

# Registered on the dev server by `keel up` (and by the tests); set on every run,
# so the Temporal UI can list the runs of one Keel execution, workflow or version.
EXECUTION_ID_ATTR = SearchAttributeKey.for_int("KeelExecutionId")
WORKFLOW_ID_ATTR = SearchAttributeKey.for_int("KeelWorkflowId")
WORKFLOW_VERSION_ATTR = SearchAttributeKey.for_int("KeelWorkflowVersion")
SEARCH_ATTRIBUTES = (EXECUTION_ID_ATTR, WORKFLOW_ID_ATTR, WORKFLOW_VERSION_ATTR)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=temporal_interceptors(),
        lazy=lazy,
    )


def temporal_workflow_id(settings: Settings, execution_id: int) -> str:
    return f"{settings.workflow_id_prefix}-{execution_id}"


def ui_url(settings: Settings, workflow_id: str, run_id: str | None = None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    url = f"{base}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
    return f"{url}/{run_id}/history" if run_id else url
