"""Sampling profiles of the API and worker processes while Keel runs, with py-spy.

py-spy reads the processes from outside (no code of theirs changes) and writes
collapsed stacks (``--format raw``: ``frame;frame;... count`` per line). We sum
them three ways: by the package the sampled frame belongs to (self time), by our
own functions anywhere on the stack (inclusive time), and the hottest frames.
Only samples of a thread holding the GIL are kept (``--gil``): Python doing work,
not threads waiting in epoll or on a lock. The Temporal SDK's Rust core runs on
its own threads and shows up in the CPU totals from /proc instead.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.platform import REPO

OURS = ("api", "activities", "workflows", "infra", "worker")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
RATE = 100
# Process entry points: on every stack, so they say nothing.
ENTRY_POINTS = ("keel/cli.py", "worker/main.py")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    process: str
    samples: int = 0
    by_package: Counter[str] = field(default_factory=Counter)
    ours_inclusive: Counter[str] = field(default_factory=Counter)
    hottest: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def share(self, count: int) -> float:
        return count / self.samples if self.samples else 0.0


def _relative(path: str) -> str:
    """py-spy already shortens paths to the import root; shorten any absolute ones too."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(str(REPO) + "/"):
        return path[len(str(REPO)) + 1 :]
    return re.split(r"python3\.\d+/", path, maxsplit=1)[-1]


def owner(path: str) -> str:
    """Who a frame's file belongs to: one of our packages, or a library/stdlib module."""
    if path.startswith("<frozen"):
        return "<frozen importlib>" if "importlib" in path else "<frozen>"
    top = _relative(path).split("/", 1)[0].removesuffix(".py")
    return f"keel:{top}" if top in OURS else top


def _short(func: str, path: str, line: str | None) -> str:
    return f"{func} ({_relative(path)}{':' + line if line else ''})"


def summarise(process: str, raw: str) -> Profile:
    profile = Profile(process)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for f in stack.split(";") if (m := FRAME.match(f))]
        if not frames:
            continue
        profile.samples += count
        leaf = frames[-1]
        profile.by_package[owner(leaf["file"])] += count
        profile.hottest[_short(leaf["func"], leaf["file"], leaf["line"])] += count
        seen = set()
        for frame in frames:
            if owner(frame["file"]).startswith("keel:") and frame["file"] not in ENTRY_POINTS:
                seen.add(_short(frame["func"], frame["file"], None))
        for name in seen:
            profile.ours_inclusive[name] += count
    return profile


async def record(
    pids: dict[str, int], seconds: float, out_dir: Path, tag: str
) -> dict[str, Profile]:
    """Sample each process for ``seconds``; returns the summaries."""
    binary = py_spy()
    if binary is None:
        return {
            name: Profile(name, error="py-spy is not installed (pip install -e '.[bench]')")
            for name in pids
        }
    procs = {}
    for name, pid in pids.items():
        path = out_dir / f"profile-{tag}-{name}.txt"
        procs[name] = (
            path,
            await asyncio.create_subprocess_exec(
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--output",
                str(path),
                "--nonblocking",
                "--gil",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ),
        )
    out: dict[str, Profile] = {}
    for name, (path, proc) in procs.items():
        try:
            async with asyncio.timeout(seconds + 60):
                _, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            out[name] = Profile(name, error="py-spy did not finish")
            continue
        if proc.returncode != 0 or not path.exists():
            out[name] = Profile(name, error=f"py-spy failed: {err.decode()[-300:]}")
            continue
        out[name] = summarise(name, path.read_text())
    return out
