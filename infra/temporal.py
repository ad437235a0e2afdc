"""Temporal client, data converter and the search attributes operators filter by.

One ``connect`` for the API, the worker and the command line: the namespace, TLS
(server CA, client certificate for mTLS, server name) and API-key authentication
(Temporal Cloud) all come from the settings.
"""

from __future__ import annotations

import shlex
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from infra.logging import get_logger
from infra.settings import Settings
from infra.tracing import temporal_interceptors

log = get_logger("keel.temporal")

# Registered by `keel up` on its dev server and by `keel worker` where it may (see
# ensure_search_attributes); set on every run, so the Temporal UI can list the runs
# of one Keel execution, workflow or version.
EXECUTION_ID_ATTR = SearchAttributeKey.for_int("KeelExecutionId")
WORKFLOW_ID_ATTR = SearchAttributeKey.for_int("KeelWorkflowId")
WORKFLOW_VERSION_ATTR = SearchAttributeKey.for_int("KeelWorkflowVersion")
# A keyword (the id as text): the dev server's SQLite visibility store has only three
# Int search attributes, taken by the ones above.
WORKSPACE_ID_ATTR = SearchAttributeKey.for_keyword("KeelWorkspaceId")
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[Any], ...] = (
    EXECUTION_ID_ATTR,
    WORKFLOW_ID_ATTR,
    WORKFLOW_VERSION_ATTR,
    WORKSPACE_ID_ATTR,
)


def attribute_type(key: SearchAttributeKey[Any]) -> str:
    """The type's name as the temporal command line spells it (Int, Keyword)."""
    return "Keyword" if key.indexed_value_type == SearchAttributeIndexedValueType.KEYWORD else "Int"


# The operator service refuses with these when the caller may not change the namespace
# (Temporal Cloud, a restricted role) or does not offer the call at all.
NOT_ALLOWED = (
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.UNIMPLEMENTED,
)


class SearchAttributesMissing(Exception):
    """Keel's search attributes are not on the namespace and Keel may not add them;
    the message says what to run."""


def tls_config(settings: Settings) -> TLSConfig | bool:
    """What ``Client.connect(tls=...)`` needs: False for plain TCP (the dev server)."""
    if not settings.temporal_uses_tls:
        return False
    return TLSConfig(
        server_root_ca_cert=settings.temporal_tls_ca.read_bytes()
        if settings.temporal_tls_ca
        else None,
        client_cert=settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None,
        client_private_key=settings.temporal_tls_key.read_bytes()
        if settings.temporal_tls_key
        else None,
        domain=settings.temporal_tls_server_name,
    )


# One for the whole process: it keeps nothing but its cache of pydantic TypeAdapters (the
# SDK's LRU, safe across the worker's activation threads).
_PYDANTIC_JSON = PydanticJSONPlainPayloadConverter()


class PayloadConverter(CompositePayloadConverter):
    """The SDK's pydantic payload converter (``temporalio.contrib.pydantic``), with one
    cache of TypeAdapters for the process. A worker makes a new payload converter for
    every workflow run it loads, and the SDK's keeps its adapters per instance, so each
    run built the adapters of its inputs and results again: 3.8 ms of CPU per replayed
    run (docs/benchmarks.md)."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _PYDANTIC_JSON if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


data_converter = DataConverter(payload_converter_class=PayloadConverter)


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """The client; ``lazy``: it connects on its first call (the API starts without
    Temporal), and a call that cannot connect raises ``RPCError`` UNAVAILABLE, as a
    call does once Temporal has gone away."""
    api_key = settings.temporal_api_key
    client = await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key.get_secret_value() if api_key else None,
        tls=tls_config(settings),
        data_converter=data_converter,
        interceptors=temporal_interceptors(),
        lazy=lazy,
    )
    if lazy:
        _unavailable_until_connected(client)
    return client


def _unavailable_until_connected(client: Client) -> None:
    """The SDK's lazy client raises a bare ``RuntimeError`` when its connect fails, where
    every call Temporal does not answer raises ``RPCError``: the API's handlers of the
    latter (a 503, or the record as it stands) missed it, and a request sent while
    Temporal had been unreachable since the API started was a 500. The connect is
    tried again on the next call, as the SDK does."""
    service: Any = client.service_client
    connected = service._connected_client

    async def connected_or_unavailable() -> Any:
        try:
            return await connected()
        except RuntimeError as exc:
            raise RPCError(
                f"cannot connect to Temporal: {exc}", RPCStatusCode.UNAVAILABLE, b""
            ) from exc

    service._connected_client = connected_or_unavailable


def register_command(settings: Settings) -> str:
    """The ``temporal`` CLI command an operator runs to register Keel's search
    attributes with this Keel's connection settings (secrets as variables, not values)."""
    args = [
        "temporal",
        "operator",
        "search-attribute",
        "create",
        "--address",
        settings.temporal_address,
        "--namespace",
        settings.temporal_namespace,
    ]
    if settings.temporal_api_key is not None:
        args += ["--api-key", "$KEEL_TEMPORAL_API_KEY"]
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        args += [
            "--tls-cert-path",
            str(settings.temporal_tls_cert),
            "--tls-key-path",
            str(settings.temporal_tls_key),
        ]
    if settings.temporal_tls_ca:
        args += ["--tls-ca-path", str(settings.temporal_tls_ca)]
    if settings.temporal_tls_server_name:
        args += ["--tls-server-name", settings.temporal_tls_server_name]
    if settings.temporal_uses_tls:
        args.append("--tls")
    for key in SEARCH_ATTRIBUTES:
        args += ["--name", key.name, "--type", attribute_type(key)]
    # The API key stays a shell variable reference: quoted, it would be sent literally.
    return " ".join(arg if arg.startswith("$") else shlex.quote(arg) for arg in args)


async def ensure_search_attributes(client: Client, settings: Settings) -> None:
    """Register Keel's search attributes on the namespace if they are missing and we
    may; raise SearchAttributesMissing (saying what to run) if we may not.

    Registering is idempotent: a concurrent worker doing the same is harmless."""
    namespace = settings.temporal_namespace
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status not in NOT_ALLOWED:
            raise
        # Temporal Cloud may not let us look; starting a run says so if they are missing.
        log.warning(
            "cannot check Keel's search attributes; if runs fail to start for "
            "want of them, register them with the command given",
            namespace=namespace,
            reason=exc.message,
            command=register_command(settings),
        )
        return
    have = set(listed.custom_attributes) | set(listed.system_attributes)
    missing = [key for key in SEARCH_ATTRIBUTES if key.name not in have]
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in missing
                },
            )
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return
        if exc.status not in NOT_ALLOWED:
            raise
        names = ", ".join(key.name for key in missing)
        raise SearchAttributesMissing(
            f"the namespace {namespace!r} lacks Keel's search attributes ({names}) and "
            f"Keel may not add them ({exc.message}); run: {register_command(settings)}"
        ) from None
    log.info(
        "registered search attributes", namespace=namespace, names=[key.name for key in missing]
    )


def temporal_workflow_id(settings: Settings, execution_id: int) -> str:
    return f"{settings.workflow_id_prefix}-{execution_id}"


def ui_url(settings: Settings, workflow_id: str, run_id: str | None = None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    url = f"{base}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
    return f"{url}/{run_id}/history" if run_id else url
