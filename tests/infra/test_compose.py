"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.temporal import SEARCH_ATTRIBUTES, attribute_type

ROOT = Path(__file__).resolve().parents[2]
KEEL = Path(sys.executable).parent / "keel"
APP_SERVICES = ("api", "worker", "migrate")
# What every Keel process needs to run in production.
KEEL_ENV = ("KEEL_DATABASE_URL", "KEEL_TEMPORAL_ADDRESS", "KEEL_SECRET_KEY", "KEEL_ENVIRONMENT")
REQUIRED_REF = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}$")  # ${NAME:?message}
# An optional secret: ${NAME:-}, unset (empty) unless the environment gives it.
OPTIONAL_SECRET_REF = re.compile(r"^\$\{(KEEL_TEMPORAL_API_KEY):-\}$")
SECRETISH = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def keel_subcommands() -> set[str]:
    """The subcommands ``keel --help`` lists (between its two argument sections)."""
    result = subprocess.run([str(KEEL), "--help"], capture_output=True, text=True, check=True)
    listing = result.stdout.split("positional arguments:")[1].split("options:")[0]
    return set(re.findall(r"^ {4}([a-z]+) ", listing, re.MULTILINE))


def test_every_service_exists(services: dict[str, Any]) -> None:
    assert set(services) == {"mysql", "temporal", "temporal-setup", "temporal-ui", *APP_SERVICES}


def test_published_ports(services: dict[str, Any]) -> None:
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["temporal-ui"]["ports"] == ["8233:8080"]
    # The databases and Temporal's frontend stay on the compose network.
    for name in ("mysql", "temporal", "worker", "migrate", "temporal-setup"):
        assert "ports" not in services[name], name


def test_dependencies_wait_for_the_right_condition(services: dict[str, Any]) -> None:
    def needs(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert needs("migrate") == {"mysql": "service_healthy"}
    assert needs("temporal") == {"mysql": "service_healthy"}
    assert needs("temporal-setup") == {"temporal": "service_healthy"}
    assert needs("temporal-ui") == {"temporal": "service_healthy"}
    for name in ("api", "worker"):
        assert needs(name) == {
            "migrate": "service_completed_successfully",
            "temporal": "service_healthy",
            "temporal-setup": "service_completed_successfully",
        }, name


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in ("mysql", "temporal", "api"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("retries", 0) >= 3, name
    assert "/health" in " ".join(services["api"]["healthcheck"]["test"])
    assert "127.0.0.1" in " ".join(services["mysql"]["healthcheck"]["test"])


def test_temporal_runs_on_mysql(services: dict[str, Any]) -> None:
    temporal = env(services["temporal"])
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert temporal["DB"] == "mysql8"
    assert temporal["MYSQL_SEEDS"] == "mysql"
    assert temporal["DB_PORT"] == "3306"
    assert services["mysql"]["image"].startswith("mysql:8")


def test_search_attributes_are_registered(services: dict[str, Any]) -> None:
    setup = services["temporal-setup"]
    assert setup["image"].startswith("temporalio/admin-tools:")
    script = " ".join(setup["command"])
    assert "temporal operator search-attribute create" in script
    for key in SEARCH_ATTRIBUTES:
        assert f"--name {key.name} --type {attribute_type(key)}" in script
    assert setup["restart"] == "no"


def test_keel_services_get_the_settings_they_need(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        values = env(services[name])
        missing = [key for key in KEEL_ENV if key not in values]
        assert not missing, (name, missing)
        assert values["KEEL_ENVIRONMENT"] == "production"
        assert values["KEEL_TEMPORAL_ADDRESS"] == "${KEEL_TEMPORAL_ADDRESS:-temporal:7233}"
        assert values["KEEL_DATABASE_URL"].startswith("mysql+aiomysql://keel:")
        assert values["KEEL_DATABASE_URL"].split("@")[1].startswith("mysql:3306/keel")
        assert REQUIRED_REF.match(values["KEEL_SECRET_KEY"]), values["KEEL_SECRET_KEY"]
    # One definition, shared: API, worker and migrate see the same database.
    assert env(services["api"]) == env(services["worker"]) == env(services["migrate"])


def test_no_secret_is_written_in_the_file(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for key, value in env(service).items():
            if SECRETISH.search(key):
                assert REQUIRED_REF.match(value) or OPTIONAL_SECRET_REF.match(value), (
                    f"{name}.{key} must come from the environment"
                )
            if "://" in value and "@" in value:  # a URL with credentials
                password = value.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
                assert REQUIRED_REF.match(password), f"{name}.{key} embeds a literal password"


def test_keel_commands_exist(services: dict[str, Any]) -> None:
    commands = keel_subcommands()
    assert commands == {"migrate", "api", "worker", "up", "watch", "user", "apikey"}
    expected = {
        "api": ["keel", "api"],
        "worker": ["keel", "worker"],
        "migrate": ["keel", "migrate"],
    }
    for name, command in expected.items():
        assert services[name]["command"] == command
        assert command[1] in commands
        assert services[name]["image"] == "keel:latest"
    assert services["migrate"]["restart"] == "no"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        tuple(line.split(None, 1))
        for line in lines  # type: ignore[misc]
        if line and not line.startswith("#")
    ]


def test_dockerfile_default_command_is_a_keel_command() -> None:
    cmds = [arg for op, arg in dockerfile_instructions() if op == "CMD"]
    assert len(cmds) == 1
    command = json.loads(cmds[0])
    assert command == ["keel", "api"]
    assert command[1] in keel_subcommands()


def test_dockerfile_builds_a_slim_non_root_image() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    # Dependencies from the lock in a layer before the code, then Keel itself.
    runs = [arg for op, arg in instructions if op == "RUN"]
    copies = [arg for op, arg in instructions if op == "COPY"]
    assert any("uv sync --locked --no-install-project" in arg for arg in runs)
    assert copies[0] == "pyproject.toml uv.lock ./"
    assert any("uv sync --locked --no-editable" in arg for arg in runs)
    package_dirs = ("keel", "api", "activities", "infra", "worker", "workflows")
    assert {arg.split()[0] for arg in copies} >= set(package_dirs)
    # Whatever the build copies, secrets and local state stay out of the context.
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".env", ".venv", "data", ".git"):
        assert path in ignored


def test_temporal_cloud_override_turns_the_local_temporal_off(services: dict[str, Any]) -> None:
    override = yaml.safe_load((ROOT / "docker-compose.temporal-cloud.yml").read_text())
    changed = override["services"]
    for name in ("temporal", "temporal-setup", "temporal-ui"):
        assert changed[name] == {"profiles": ["local-temporal"]}, name
    for name in ("api", "worker"):
        assert any(volume.endswith(":/certs:ro") for volume in changed[name]["volumes"])
        # With those services off, Keel's services must not require them.
        for dep in ("temporal", "temporal-setup"):
            assert services[name]["depends_on"][dep]["required"] is False, (name, dep)
    assert set(changed) <= set(services)
    keel_env = env(services["worker"])
    for setting in (
        "KEEL_TEMPORAL_NAMESPACE",
        "KEEL_TEMPORAL_TLS_CERT",
        "KEEL_TEMPORAL_TLS_KEY",
        "KEEL_TEMPORAL_TLS_CA",
        "KEEL_TEMPORAL_API_KEY",
        "KEEL_WORKER_SHUTDOWN_GRACE_S",
    ):
        assert keel_env[setting].startswith(f"${{{setting}:-"), setting
