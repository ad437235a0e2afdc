"""The installed ``keel`` console script, run as a user would run it.

Every test runs ``keel`` in a subprocess, in a temporary working directory (so no
``.env`` of the developer's is read) with its own data dir and free ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.devserver import DYNAMIC_CONFIG
from infra.models import Base
from workflows.events import EventType
from workflows.status import FINISHED, ExecutionStatus

KEEL = Path(sys.executable).parent / "keel"
SUBCOMMANDS = ["migrate", "api", "worker", "up", "watch"]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on right now (held together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def keel_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    api, temporal, ui = free_ports(3)
    env.update(
        KEEL_DATA_DIR=str(data_dir),
        KEEL_API_PORT=str(api),
        KEEL_TEMPORAL_PORT=str(temporal),
        KEEL_TEMPORAL_UI_PORT=str(ui),
        KEEL_LOG_FORMAT="json",
    )
    env.update(overrides)
    return env


def run_keel(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEEL), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_console_script_is_installed() -> None:
    assert KEEL.exists(), f"{KEEL} is missing; install the project (make test does)"


@pytest.mark.parametrize("command", [[], *([c] for c in SUBCOMMANDS)], ids=["keel", *SUBCOMMANDS])
def test_help(command: list[str], tmp_path: Path) -> None:
    result = run_keel(*command, "--help", env=keel_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: keel {' '.join(command)}".rstrip()), result.stdout
    if not command:
        for name in SUBCOMMANDS:
            assert f"    {name} " in result.stdout


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_keel(env=keel_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: keel" in result.stderr


def test_unsafe_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    env = keel_env(tmp_path / "data", KEEL_ENVIRONMENT="production")
    result = run_keel("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("keel: invalid settings: KEEL_SECRET_KEY"), result.stderr
    assert not (tmp_path / "data").exists()


def test_migrate_creates_every_table(tmp_path: Path) -> None:
    env = keel_env(tmp_path / "data")
    for _ in range(2):  # the second run finds nothing to do
        result = run_keel("migrate", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr

    with sqlite3.connect(tmp_path / "data" / "keel.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    assert len(revision) == 1
    # Progress is structured JSON on stderr, never print().
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(line["event"] == "database is at the latest revision" for line in lines)


PORT_SETTINGS = ["KEEL_API_PORT", "KEEL_TEMPORAL_PORT", "KEEL_TEMPORAL_UI_PORT"]


@pytest.mark.parametrize("setting", PORT_SETTINGS)
def test_up_refuses_a_port_in_use(setting: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = keel_env(tmp_path / "data", **{setting: str(port)})
        result = run_keel("up", env=env, cwd=tmp_path, timeout=30)

    assert result.returncode == 2
    assert result.stderr == f"keel: port {port} is already in use; set {setting} to use another\n"
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()


def test_up_refuses_two_settings_on_one_port(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = keel_env(tmp_path, KEEL_API_PORT=str(port), KEEL_TEMPORAL_UI_PORT=str(port))
    result = run_keel("up", env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert result.stderr == (
        f"keel: KEEL_TEMPORAL_UI_PORT and KEEL_API_PORT are both {port}; give each its own port\n"
    )


# -- keel up, end to end ---------------------------------------------------------------------


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    env: dict[str, str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['KEEL_API_PORT']}"

    def logs(self) -> list[dict[str, Any]]:
        lines = self.stderr.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def child_pids(self) -> dict[str, int]:
        return {
            line["process"]: line["pid"]
            for line in self.logs()
            if line.get("logger") == "keel.up" and line["event"] == "started"
        }

    def wait_until_up(self, timeout: float = 120) -> str:
        def banner() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"keel up exited with {self.process.returncode}:\n"
                    f"{self.stderr.read_text()[-4000:]}"
                )
            text = self.stdout.read_text()
            return text if "Keel is up" in text else None

        return wait_until(banner, timeout=timeout, what="keel up to print its banner")

    def interrupt(self, timeout: float = 90) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)


@contextmanager
def keel_up(env: dict[str, str], cwd: Path, name: str) -> Iterator[Up]:
    stdout, stderr = cwd / f"{name}.out", cwd / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(KEEL), "up"], env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    up = Up(process, stdout, stderr, env)
    try:
        yield up
    finally:
        if process.poll() is None:  # the test failed half-way: don't leave servers behind
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()  # its children get SIGTERM from the kernel (PDEATHSIG)
                process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_gone(pids: dict[str, int]) -> None:
    running = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not running, f"still running after keel up exited: {running}"


@pytest.mark.slow
def test_up_runs_everything_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = keel_env(data_dir)
    ui = f"http://127.0.0.1:{env['KEEL_TEMPORAL_UI_PORT']}"

    with keel_up(env, tmp_path, "first") as up:
        banner = up.wait_until_up()
        assert f"{up.api}/docs" in banner
        assert ui in banner
        assert str(data_dir) in banner

        health = httpx.get(f"{up.api}/health", timeout=10)
        assert health.status_code in (200, 503), health.text
        assert health.json()["data"]["db"] == "ok"
        assert health.json()["data"]["temporal"] == "ok"
        assert httpx.get(ui, timeout=10).status_code == 200
        assert httpx.get(f"{up.api}/docs", timeout=10).status_code == 200

        created = httpx.post(
            f"{up.api}/api/v1/Agent/",
            timeout=10,
            headers=owner_auth(data_dir),
            json={"name": "persist-me", "provider": "fake", "model": "fake-echo"},
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["data"]["id"]

        pids = up.child_pids()
        assert {"temporal", "api"} <= set(pids), pids
        # Temporal reads its queues as often as DYNAMIC_CONFIG says (infra/devserver.py).
        argv = Path(f"/proc/{pids['temporal']}/cmdline").read_bytes().split(b"\0")
        for value in DYNAMIC_CONFIG:
            assert value.encode() in argv, argv
        assert up.interrupt() == 0, up.stderr.read_text()[-4000:]
        assert_gone(pids)
        # Stopped in reverse order of starting: API, worker (when there is one), Temporal.
        stopped = [
            line["process"]
            for line in up.logs()
            if line.get("logger") == "keel.up" and line["event"] == "stopped"
        ]
        assert stopped == [name for name in ("api", "worker", "temporal") if name in pids]

    assert (data_dir / "keel.db").exists()
    assert (data_dir / "temporal.db").exists()
    # Temporal's store kept a write-ahead log (SQLITE_PRAGMAS), as Keel's does.
    for name in ("keel.db", "temporal.db"):
        with closing(sqlite3.connect(data_dir / name)) as store:
            assert store.execute("PRAGMA journal_mode").fetchone() == ("wal",), name
    assert (data_dir / "temporal.log").exists()

    with keel_up(env, tmp_path, "second") as up:
        up.wait_until_up()
        agent = httpx.get(
            f"{up.api}/api/v1/Agent/{agent_id}", timeout=10, headers=owner_auth(data_dir)
        )
        assert agent.status_code == 200, agent.text
        assert agent.json()["data"]["name"] == "persist-me"
        pids = up.child_pids()
        assert up.interrupt() == 0, up.stderr.read_text()[-4000:]
        assert_gone(pids)


def owner_auth(data_dir: Path) -> dict[str, str]:
    """The first owner key `keel up` wrote to <data dir>/credentials, as a header."""
    text = (data_dir / "credentials").read_text()
    key = next(
        line.split("=", 1)[1] for line in text.splitlines() if line.startswith("KEEL_API_KEY=")
    )
    return {"Authorization": f"Bearer {key.strip()}"}


def post(
    url: str, body: dict[str, Any], status: int = 201, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = httpx.post(url, json=body, timeout=10, headers=headers)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()["data"]
    return result


@pytest.mark.slow
def test_up_restarts_a_killed_worker_and_the_run_in_flight_completes(tmp_path: Path) -> None:
    env = keel_env(tmp_path / "data")
    with keel_up(env, tmp_path, "up") as up:
        up.wait_until_up()
        api = f"{up.api}/api/v1"
        auth = owner_auth(tmp_path / "data")
        agent = post(
            f"{api}/Agent/",
            {
                "name": "slow",
                "provider": "fake",
                "model": "fake-echo",
                "metadata": {"fake": {"delay_s": 4}},
            },
            headers=auth,
        )
        workflow = post(
            f"{api}/Workflow/",
            {
                "name": "one",
                "definition": {
                    "nodes": [{"id": "a", "type": "agent", "agent_id": agent["id"]}],
                    "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}],
                },
            },
            headers=auth,
        )
        post(f"{api}/Workflow/{workflow['id']}/publish", {}, status=200, headers=auth)
        execution = post(
            f"{api}/Execution/", {"workflow_id": workflow["id"], "start": True}, headers=auth
        )

        def node_started() -> bool:
            events = httpx.get(
                f"{api}/Execution/{execution['id']}/events", timeout=10, headers=auth
            )
            return any(e["type"] == EventType.NODE_STARTED for e in events.json()["data"]["items"])

        wait_until(node_started, timeout=60, what="the agent node to start")
        first = up.child_pids()
        os.kill(first["worker"], signal.SIGKILL)

        def restarted() -> int | None:
            pid = up.child_pids()["worker"]
            return pid if pid != first["worker"] else None

        second_worker = wait_until(restarted, timeout=30, what="a new worker")
        died = [line for line in up.logs() if line["event"].startswith("child exited")]
        assert [(d["process"], d["reason"]) for d in died] == [
            ("worker", "worker killed by SIGKILL")
        ], died
        assert died[0]["event"] == "child exited unexpectedly; restarting"
        assert up.process.poll() is None  # everything else kept running

        def healthy() -> bool:
            response = httpx.get(f"{up.api}/health", timeout=10)
            return response.status_code == 200 and response.json()["data"]["workers"] >= 1

        wait_until(healthy, timeout=60, what="/health to be ok again")

        def finished() -> dict[str, Any] | None:
            found = httpx.get(
                f"{api}/Execution/{execution['id']}", timeout=10, headers=auth
            ).json()["data"]
            return found if found["status"] in FINISHED else None

        final = wait_until(finished, timeout=90, what="the run to finish")
        assert final["status"] == ExecutionStatus.COMPLETED, final
        assert {n["node_id"]: n["attempts"] for n in final["nodes"]} == {"a": 2}

        pids = up.child_pids()
        assert pids["worker"] == second_worker
        assert up.interrupt() == 0, up.stderr.read_text()[-4000:]
        assert_gone({**pids, "killed worker": first["worker"]})
        stopped = [
            line["process"]
            for line in up.logs()
            if line.get("logger") == "keel.up" and line["event"] == "stopped"
        ]
        assert stopped == ["api", "worker", "temporal"]
