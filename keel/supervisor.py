"""``keel up``: the embedded platform in one foreground process.

It checks its ports, starts the Temporal dev server (SQLite file under the data
dir), runs migrations, then starts ``keel worker`` and ``keel api`` as child
processes and watches them. A child that dies on its own is restarted after a
backoff (runs in flight continue once the worker is back: their state is in
Temporal); only a child that keeps dying soon after each start makes ``keel up``
give up, stop everything and exit non-zero. Ctrl-C or SIGTERM stops the API, then
the worker, then Temporal.

This process only orchestrates subprocesses (migrations included), so it stays
single-threaded: children are started in their own process group (Ctrl-C in the
terminal reaches only us, and we stop them in order) and, on Linux, are told by
the kernel to exit if we are killed outright.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from infra.devserver import dynamic_config_args, sqlite_pragma_args, temporal_binary
from infra.logging import get_logger
from infra.settings import Settings
from infra.temporal import SEARCH_ATTRIBUTES, attribute_type

log = get_logger("keel.up")

TEMPORAL_READY_TIMEOUT_S = 60.0
API_READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2
# How long each child gets to stop after SIGTERM before it is killed (the worker:
# its drain grace from the settings, plus this).
STOP_TIMEOUT_S = {"api": 10.0, "worker": 10.0, "temporal": 10.0}


class StartupError(Exception):
    """The platform could not be brought up; the message says why."""


class Stopped(Exception):
    """A signal asked us to stop while starting up."""


# -- ports -----------------------------------------------------------------------------------


def _wildcard_to_loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _bind_error(host: str, port: int) -> OSError | None:
    """Try to bind ``host:port`` the way a server would; the error if we cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Like uvicorn and Temporal: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def port_problem(settings: Settings) -> str | None:
    """One human sentence if a port ``keel up`` needs is taken or clashes, else None."""
    wanted = [
        ("127.0.0.1", settings.temporal_port, "KEEL_TEMPORAL_PORT"),
        ("127.0.0.1", settings.temporal_ui_port, "KEEL_TEMPORAL_UI_PORT"),
        (settings.api_host, settings.api_port, "KEEL_API_PORT"),
    ]
    seen: dict[int, str] = {}
    for _, port, env in wanted:
        if port in seen:
            return f"{seen[port]} and {env} are both {port}; give each its own port"
        seen[port] = env
    for host, port, env in wanted:
        error = _bind_error(host, port)
        if error is None:
            continue
        if error.errno == errno.EADDRINUSE:
            return f"port {port} is already in use; set {env} to use another"
        return f"cannot listen on {host}:{port} ({error.strerror}); check {env}"
    return None


# -- children --------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform == "linux":
    # Resolved here, in the parent, so the child only makes the system call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _exit_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when ``keel up`` dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RestartPolicy:
    """When a child that died is started again: after a delay that doubles with each
    consecutive fast failure (death within ``fast_s`` of starting), never after
    ``give_up_after`` of them in a row. A child that ran longer starts a fresh count.

    A child ended by SIGKILL did not fail on its own (a crash is SIGSEGV or SIGABRT,
    an error an exit code): something outside killed it (the OOM killer, an operator,
    the chaos run). It is restarted at once and starts a fresh count too, or a worker
    killed a few times in a row would make ``keel up`` give up on a healthy platform."""

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    fast_s: float = 15.0
    give_up_after: int = 5
    fast_failures: int = 0

    def delay_after(self, ran_s: float, killed: bool = False) -> float | None:
        """Seconds to wait before restarting, or None: give up."""
        fast = ran_s < self.fast_s and not killed
        self.fast_failures = self.fast_failures + 1 if fast else 0
        if self.fast_failures >= self.give_up_after:
            return None
        return min(self.first_delay_s * 2**self.fast_failures, self.max_delay_s)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Child:
    """One supervised process: how to start it, and the running process if any."""

    name: str
    argv: list[str]
    env: dict[str, str]
    output: Path | None = None  # appended to; None: our own stdout/stderr
    stop_timeout_s: float = 10.0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # set while waiting to be restarted
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        if self.output is None:
            self.process = _popen(self.argv, self.env, None)
        else:
            with self.output.open("ab") as output:
                self.process = _popen(self.argv, self.env, output)
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("started", process=self.name, pid=self.process.pid)

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL. Safe to call on a child that already exited."""
        self.restart_at = None
        if self.process is None or self.process.poll() is not None:
            return
        timeout = self.stop_timeout_s
        log.info("stopping", process=self.name, pid=self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing", process=self.name, timeout_s=timeout)
            self.process.kill()
            self.process.wait()
        log.info("stopped", process=self.name, exit_code=self.process.returncode)


def _popen(
    argv: Sequence[str], env: dict[str, str], stdout: IO[bytes] | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603  (our own binaries, no shell)
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        process_group=0,
        preexec_fn=_exit_with_parent if _prctl is not None else None,
    )


def _spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str],
    output: Path | None = None,
    stop_timeout_s: float | None = None,
) -> Child:
    child = Child(
        name,
        list(argv),
        env,
        output,
        stop_timeout_s=stop_timeout_s or STOP_TIMEOUT_S.get(name, 10.0),
    )
    child.start()
    return child


def keel_command(subcommand: str) -> list[str]:
    """``keel <subcommand>`` with this same Python (works without the venv on PATH)."""
    return [sys.executable, "-m", "keel", subcommand]


def temporal_command(settings: Settings, data_dir: Path) -> list[str]:
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.db"),
        *sqlite_pragma_args(),
        *dynamic_config_args(),
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
    ]
    for key in SEARCH_ATTRIBUTES:
        # Registering again on a restart (same db file) is a no-op for the same type.
        command += ["--search-attribute", f"{key.name}={attribute_type(key)}"]
    return [*command, "--log-level", "warn"]


# -- the platform ----------------------------------------------------------------------------


@dataclass
class Platform:
    settings: Settings
    data_dir: Path = field(init=False)
    temporal_address: str = field(init=False)
    children: list[Child] = field(default_factory=list)
    stop_signal: int | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.settings.data_dir.resolve()
        self.temporal_address = f"127.0.0.1:{self.settings.temporal_port}"

    # Signals only set a flag; the loops below look at it between polls.
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            log.info("stop requested", signal=signal.Signals(signum).name)
        self.stop_signal = signum

    def _check_stop(self) -> None:
        if self.stop_signal is not None:
            raise Stopped

    def _check_children(self) -> None:
        for child in self.children:
            if child.exit_code is not None:
                raise StartupError(self._died_message(child))

    def _died_message(self, child: Child) -> str:
        message = f"{child.name} {describe_exit(child.exit_code or 0)}"
        if child.name == "temporal":
            message += f"; its output is in {self.data_dir / 'temporal.log'}"
        return message

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KEEL_DATA_DIR"] = str(self.data_dir)
        env["KEEL_TEMPORAL_ADDRESS"] = self.temporal_address
        if "temporal_ui_url" not in self.settings.model_fields_set:
            env["KEEL_TEMPORAL_UI_URL"] = self.temporal_ui_url
        return env

    @property
    def api_url(self) -> str:
        return f"http://{_wildcard_to_loopback(self.settings.api_host)}:{self.settings.api_port}"

    @property
    def temporal_ui_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.temporal_ui_port}"

    def run(self) -> int:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /health poll
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            try:
                self.start()
            except Stopped:
                return self.shutdown(0)
            except StartupError as exc:
                log.error("keel up failed", reason=str(exc))
                return self.shutdown(1)
            sys.stdout.write(self.banner())
            sys.stdout.flush()
            return self.supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.child_env()

        self.children.append(
            _spawn(
                "temporal",
                temporal_command(self.settings, self.data_dir),
                env=env,
                output=self.data_dir / "temporal.log",
            )
        )
        self.wait_for_temporal()

        self.migrate(env)

        worker_stop_s = self.settings.worker_shutdown_grace_s + STOP_TIMEOUT_S["worker"]
        self.children.append(
            _spawn("worker", keel_command("worker"), env=env, stop_timeout_s=worker_stop_s)
        )
        self.children.append(_spawn("api", keel_command("api"), env=env))
        self.wait_for_api()

    def wait_for_temporal(self) -> None:
        """Until the namespace answers with our search attributes registered."""
        wanted = {key.name for key in SEARCH_ATTRIBUTES}
        command = [
            temporal_binary(),
            "operator",
            "search-attribute",
            "list",
            "--address",
            self.temporal_address,
            "--namespace",
            self.settings.temporal_namespace,
            "--output",
            "json",
        ]
        started = time.monotonic()
        last = "no answer yet"
        while True:
            self._check_stop()
            self._check_children()
            try:
                result = subprocess.run(  # noqa: S603
                    command, capture_output=True, text=True, timeout=10, check=False
                )
            except subprocess.TimeoutExpired:
                result = subprocess.CompletedProcess(command, -1, "", "timed out")
            if result.returncode == 0:
                found = set(json.loads(result.stdout).get("customAttributes", {}))
                if wanted <= found:
                    log.info(
                        "temporal is ready",
                        address=self.temporal_address,
                        seconds=round(time.monotonic() - started, 2),
                    )
                    return
                last = f"search attributes missing: {sorted(wanted - found)}"
            else:
                last = (result.stderr.strip().splitlines() or ["(no output)"])[0]
            if time.monotonic() - started > TEMPORAL_READY_TIMEOUT_S:
                raise StartupError(
                    f"Temporal was not ready after {TEMPORAL_READY_TIMEOUT_S:.0f}s ({last}); "
                    f"see {self.data_dir / 'temporal.log'}"
                )
            time.sleep(POLL_INTERVAL_S)

    def migrate(self, env: dict[str, str]) -> None:
        # A subprocess like the others: alembic's engine and threads stay out of this one.
        # Ctrl-C meanwhile lets the migration finish, then stops.
        # --bootstrap: a fresh installation gets its owner; the credentials print once.
        migration = _spawn("migrate", [*keel_command("migrate"), "--bootstrap"], env=env)
        try:
            while migration.exit_code is None:
                self._check_children()
                time.sleep(POLL_INTERVAL_S)
        finally:
            migration.stop()  # only does something if Temporal died meanwhile
        self._check_stop()
        if migration.exit_code != 0:
            raise StartupError(f"migrations failed (exit code {migration.exit_code})")

    def wait_for_api(self) -> None:
        """Until GET /health is 200 and the worker is polling."""
        started = time.monotonic()
        last = "no answer yet"
        with httpx.Client(timeout=5.0) as http:
            while True:
                self._check_stop()
                self._check_children()
                try:
                    response = http.get(f"{self.api_url}/health")
                    health = response.json().get("data") or {}
                    if response.status_code == 200 and health.get("workers", 0) >= 1:
                        log.info(
                            "api is ready",
                            url=self.api_url,
                            workers=health.get("workers"),
                            seconds=round(time.monotonic() - started, 2),
                        )
                        return
                    last = f"HTTP {response.status_code}: {health}"
                except (httpx.HTTPError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started > API_READY_TIMEOUT_S:
                    raise StartupError(
                        f"the API was not healthy after {API_READY_TIMEOUT_S:.0f}s ({last})"
                    )
                time.sleep(POLL_INTERVAL_S)

    def banner(self) -> str:
        settings = self.settings
        if settings.database_url:
            from sqlalchemy.engine import make_url

            app_db = make_url(settings.database_url).render_as_string(hide_password=True)
        else:
            app_db = str(self.data_dir / "keel.db")
        return (
            "\n"
            "Keel is up. Press Ctrl-C to stop.\n"
            f"  API          {self.api_url}\n"
            f"  API docs     {self.api_url}/docs\n"
            f"  Temporal UI  {self.temporal_ui_url}\n"
            f"  Temporal     {self.temporal_address} (namespace {settings.temporal_namespace})\n"
            f"  Worker       running (task queue {settings.task_queue})\n"
            f"  Data dir     {self.data_dir}\n"
            f"  App DB       {app_db}\n"
            f"  Temporal log {self.data_dir / 'temporal.log'}\n"
            "\n"
        )

    def supervise(self) -> int:
        """Restart children that die, until a signal asks us to stop or one keeps dying."""
        while self.stop_signal is None:
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.start()
                    continue
                code = child.exit_code
                if code is None:
                    continue
                ran_s = now - child.started_at
                delay = child.policy.delay_after(ran_s, killed=code == -signal.SIGKILL)
                if delay is None:
                    log.error(
                        "child keeps failing soon after starting; giving up",
                        process=child.name,
                        exit_code=code,
                        reason=self._died_message(child),
                        failures=child.policy.fast_failures,
                        ran_s=round(ran_s, 2),
                    )
                    return self.shutdown(1)
                log.error(
                    "child exited unexpectedly; restarting",
                    process=child.name,
                    exit_code=code,
                    reason=self._died_message(child),
                    ran_s=round(ran_s, 2),
                    restart_in_s=delay,
                    fast_failures=child.policy.fast_failures,
                )
                child.restart_at = now + delay
            time.sleep(POLL_INTERVAL_S)
        return self.shutdown(0)

    def shutdown(self, code: int) -> int:
        """Stop the API, then the worker, then Temporal (the reverse of starting)."""
        for child in reversed(self.children):
            child.stop()
        log.info("keel up stopped", exit_code=code)
        return code


def up(settings: Settings) -> int:
    problem = port_problem(settings)
    if problem is not None:
        sys.stderr.write(f"keel: {problem}\n")
        return 2
    return Platform(settings).run()
