"""``python -m bench [SCENARIO ...]``: bring the platform up, measure, write the report.

Scenarios, in the order they run (all but long_run by default): engine (1 and 6),
events (2), fanout (3), api (4), capacity (7), memory (5: a fresh worker process,
replaced by another after; 1,000 executions waiting on a human node, then all
approved), long_run (8: one execution of 10,000 calls, minutes; only when named),
profile (py-spy on the API and the worker; last, as the figures do not need it).

Environment:
  KEEL_BENCH_QUICK=1    few runs, one repeat: for validating the suite, not for figures.
                        The report goes to a temporary file unless KEEL_BENCH_OUT is set.
  KEEL_BENCH_OUT=PATH   where to write the report (default docs/benchmarks.md).
  KEEL_BENCH_KEEP=1     keep the temporary data dir (logs, databases, raw profiles).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench import scenarios as s
from bench.keel import Keel
from bench.long_run import long_run
from bench.platform import REPO, CpuMeter, Platform, loadavg, machine
from infra.logging import configure_logging, get_logger

log = get_logger("keel.bench")

ORDER = ("engine", "events", "fanout", "api", "capacity", "memory", "long_run", "profile")
# Run only when named: they take minutes, not seconds.
ONLY_WHEN_NAMED = ("long_run",)
# Seconds each scenario may spend before it skips further repeats (full mode).
BUDGET_S = {
    "engine": 360,  # its batches, then the paced chain (three repeats of three systems)
    "events": 50,
    "fanout": 60,
    "api": 60,
    "capacity": 120,
    "memory": 200,
    "long_run": 3600,
    "profile": 40,
}
# The whole run is cut short (remaining scenarios skipped) past this.
HARD_LIMIT_S = 780


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(ORDER)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in ORDER]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(ORDER)}")
    chosen = [
        name
        for name in ORDER
        if name in args.scenarios or (not args.scenarios and name not in ONLY_WHEN_NAMED)
    ]
    configure_logging()  # progress as JSON lines on stderr, like every keel process
    # Not a line per request of the load: it would cost the load generator the CPU it measures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    quick = _truthy("KEEL_BENCH_QUICK")
    out = os.environ.get("KEEL_BENCH_OUT")
    if out:
        path = Path(out)
    elif quick or args.scenarios:
        path = Path(tempfile.gettempdir()) / "keel-bench-quick.md"
    else:
        path = REPO / "docs" / "benchmarks.md"
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, report.Results]], report.Results] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    command = "make bench" if not args.scenarios else f"python -m bench {' '.join(args.scenarios)}"
    if quick:
        command = f"KEEL_BENCH_QUICK=1 {command}"
    results = runner(run(chosen, quick, command))
    text = report.write(path, results)
    sys.stdout.write(text + "\n")  # the report itself: the tool's output, not a log line
    log.info("report written", path=str(path))
    return 0


async def run(chosen: list[str], quick: bool, command: str) -> report.Results:
    began = time.monotonic()
    plan = s.Plan.make(quick)
    data_dir = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    results = report.Results(
        command=command,
        mode="quick mode" if quick else "full mode",
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        load_before=loadavg(),
        plan=plan,
    )
    platform = Platform(data_dir)
    log.info("bench data dir", data_dir=str(data_dir))
    try:
        await platform.start()
        log.info("platform up", seconds=round(time.monotonic() - began, 1))
        async with (
            httpx.AsyncClient(
                base_url=platform.api_url, timeout=60, headers=platform.auth_headers
            ) as http,
            httpx.AsyncClient(base_url=platform.bare_api_url, timeout=60) as bare_http,
        ):
            ctx = s.Context(
                platform,
                Keel(http, platform.api_url, platform.auth_headers),
                platform.client,
                plan,
                deadline=0.0,
                bare_http=bare_http,
            )
            await s.setup(ctx)
            for name in chosen:
                if time.monotonic() - began > HARD_LIMIT_S:
                    results.notes.append(f"{name}: skipped, the run was past its time limit")
                    continue
                budget = BUDGET_S[name] * (0.5 if quick else 1.0)
                ctx.deadline = time.monotonic() + budget
                log.info("scenario started", scenario=name)
                with CpuMeter(platform) as meter:
                    value = await SCENARIOS[name](ctx)
                setattr(results, name, value)
                results.foreign[name] = meter.foreign_share
                log.info(
                    "scenario done",
                    scenario=name,
                    seconds=round(meter.elapsed),
                    others_share_of_machine=round(meter.foreign_share, 2),
                )
            results.notes += ctx.notes
    finally:
        results.load_after = loadavg()
        await platform.stop()
        if _truthy("KEEL_BENCH_KEEP"):
            log.info("bench data dir kept", data_dir=str(data_dir))
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    results.duration_s = time.monotonic() - began
    return results


SCENARIOS: dict[str, Callable[[s.Context], Awaitable[Any]]] = {
    "engine": s.engine,
    "events": s.events,
    "fanout": s.fanout,
    "api": s.api,
    "capacity": s.capacity,
    "profile": s.profile,
    "memory": s.memory,
    "long_run": long_run,
}


if __name__ == "__main__":
    sys.exit(main())
