"""Undoing what a test's ``configure_logging`` (or an app's lifespan) left behind."""

from __future__ import annotations

import logging
import sys


def remove_stderr_handlers() -> None:
    """Drop the root handlers writing to this test's ``sys.stderr`` (capsys's capture),
    so later tests do not log into a capture that has ended."""
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if getattr(h, "stream", None) is not sys.stderr]
