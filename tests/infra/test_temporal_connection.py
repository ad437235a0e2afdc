"""Connecting to Temporal beyond the dev server: TLS, API key, and Keel's search
attributes registered where Keel may, or the command to run where it may not."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from pydantic import ValidationError
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.service import RPCError, TLSConfig
from temporalio.testing import WorkflowEnvironment

from infra.settings import Settings
from infra.temporal import (
    SEARCH_ATTRIBUTES,
    connect,
    ensure_search_attributes,
    register_command,
    tls_config,
)
from tests.support.settings import make_settings
from tests.support.waiting import wait_for


def settings(tmp_path: Path, **values: object) -> Settings:
    return make_settings("sqlite+aiosqlite:///unused.db", tmp_path, **values)


def test_plain_tcp_by_default(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert not plain.temporal_uses_tls
    assert tls_config(plain) is False


def test_mtls_reads_the_certificate_files(tmp_path: Path) -> None:
    files = {}
    for name in ("cert", "key", "ca"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(f"-- {name} --".encode())
    config = tls_config(
        settings(
            tmp_path,
            temporal_tls_cert=files["cert"],
            temporal_tls_key=files["key"],
            temporal_tls_ca=files["ca"],
            temporal_tls_server_name="temporal.internal",
        )
    )
    assert isinstance(config, TLSConfig)
    assert config.client_cert == b"-- cert --"
    assert config.client_private_key == b"-- key --"
    assert config.server_root_ca_cert == b"-- ca --"
    assert config.domain == "temporal.internal"


def test_an_api_key_means_tls_and_stays_secret(tmp_path: Path) -> None:
    cloud = settings(tmp_path, temporal_api_key="key-123456")
    assert cloud.temporal_uses_tls
    assert isinstance(tls_config(cloud), TLSConfig)
    assert "key-123456" not in repr(cloud)
    assert "key-123456" not in register_command(cloud)


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="KEEL_TEMPORAL_TLS_CERT and KEEL_TEMPORAL_TLS_KEY"):
        settings(tmp_path, temporal_tls_cert=cert)


def test_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"KEEL_TEMPORAL_TLS_CA: .* is not a readable file"):
        settings(tmp_path, temporal_tls_ca=tmp_path / "nope.pem")


def test_the_register_command_says_exactly_what_to_run(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    mtls = settings(
        tmp_path,
        temporal_address="ns.acct.tmprl.cloud:7233",
        temporal_namespace="ns.acct",
        temporal_tls_cert=cert,
        temporal_tls_key=key,
    )
    assert register_command(mtls) == (
        "temporal operator search-attribute create --address ns.acct.tmprl.cloud:7233 "
        f"--namespace ns.acct --tls-cert-path {cert} --tls-key-path {key} --tls "
        "--name KeelExecutionId --type Int --name KeelWorkflowId --type Int "
        "--name KeelWorkflowVersion --type Int --name KeelWorkspaceId --type Keyword"
    )
    cloud = settings(
        tmp_path,
        temporal_address="eu-west-1.aws.api.temporal.io:7233",
        temporal_namespace="ns.acct",
        temporal_api_key="k" * 20,
    )
    assert "--api-key $KEEL_TEMPORAL_API_KEY --tls " in register_command(cloud)


async def test_registers_missing_search_attributes_on_a_cluster(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    namespace = f"keel-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace,
            workflow_execution_retention_period=Duration(
                seconds=int(timedelta(days=1).total_seconds())
            ),
        )
    )
    config = settings(
        tmp_path,
        temporal_namespace=namespace,
        temporal_address=temporal_env.client.service_client.config.target_host,
    )
    client = await connect(config)

    async def listed_names() -> tuple[set[str]] | None:
        try:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
        except RPCError:  # the new namespace is not everywhere yet
            return None
        return (set(listed.custom_attributes),)

    (before,) = await wait_for(listed_names, timeout=30, what="the namespace to answer")
    assert not before & {key.name for key in SEARCH_ATTRIBUTES}

    async def registered() -> set[str]:
        await ensure_search_attributes(client, config)  # idempotent: safe to repeat
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        return set(listed.custom_attributes) & {key.name for key in SEARCH_ATTRIBUTES}

    names = await wait_for(registered, timeout=30, what="the attributes to be registered")
    assert names == {key.name for key in SEARCH_ATTRIBUTES}
